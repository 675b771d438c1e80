package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SectorSize is the logical sector size of the image.
const SectorSize = 512

// MBR partition type bytes used by the layout.
const (
	TypeFAT16LBA byte = 0x0e
	TypeFAT32LBA byte = 0x0c
	TypeLinux    byte = 0x83
)

// ErrLayout is wrapped by every invalid-layout error.
var ErrLayout = errors.New("disk: invalid layout")

// Partition is one primary MBR partition. Start and Size are in bytes and
// must be multiples of SectorSize.
type Partition struct {
	Name     string
	Start    int64
	Size     int64
	Type     byte
	Bootable bool
}

// End is the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// MBR encodes the 512-byte master boot record for up to four primary
// partitions, with the given disk signature.
func MBR(parts []Partition, signature uint32) ([]byte, error) {
	if len(parts) > 4 {
		return nil, fmt.Errorf("%w: %d partitions, MBR holds 4", ErrLayout, len(parts))
	}
	b := make([]byte, SectorSize)
	binary.LittleEndian.PutUint32(b[440:], signature)
	var prevEnd int64 = SectorSize
	for i, p := range parts {
		if p.Start%SectorSize != 0 || p.Size%SectorSize != 0 || p.Size <= 0 {
			return nil, fmt.Errorf("%w: partition %d (%s) not sector aligned", ErrLayout, i+1, p.Name)
		}
		if p.Start < prevEnd {
			return nil, fmt.Errorf("%w: partition %d (%s) overlaps the previous one", ErrLayout, i+1, p.Name)
		}
		prevEnd = p.End()
		e := b[446+16*i : 446+16*(i+1)]
		if p.Bootable {
			e[0] = 0x80
		}
		// CHS fields: "use LBA" values, as modern partitioners write.
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = p.Type
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], uint32(p.Start/SectorSize))
		binary.LittleEndian.PutUint32(e[12:], uint32(p.Size/SectorSize))
	}
	b[510], b[511] = 0x55, 0xaa
	return b, nil
}
