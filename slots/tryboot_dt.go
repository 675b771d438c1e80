package slots

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// DefaultTrybootDT is where the firmware reports the running boot: two
// big-endian u32 properties, "tryboot" (1 if the tryboot flag was set for
// this boot) and "partition" (the MBR partition booted).
const DefaultTrybootDT = "/proc/device-tree/chosen/bootloader"

// ErrDeviceTree is wrapped when the firmware's boot report is missing or
// malformed (not a Raspberry Pi, firmware too old, wrong device_tree_dir).
var ErrDeviceTree = errors.New("slots: no usable tryboot report in the device tree")

// FirmwareBoot is what the Raspberry Pi firmware says of the running boot.
type FirmwareBoot struct {
	Tryboot   bool // the one-shot tryboot flag was set for this boot
	Partition int  // MBR partition booted
}

// ReadFirmwareBoot reads the firmware's boot report from dir (normally
// DefaultTrybootDT). A missing or malformed property is an error wrapping
// ErrDeviceTree: without it nobody can prove that a trial boot happened.
func ReadFirmwareBoot(dir string) (FirmwareBoot, error) {
	var fb FirmwareBoot
	t, err := readDTU32(filepath.Join(dir, "tryboot"))
	if err != nil {
		return fb, err
	}
	p, err := readDTU32(filepath.Join(dir, "partition"))
	if err != nil {
		return fb, err
	}
	if t > 1 {
		return fb, fmt.Errorf("%w: tryboot = %d, want 0 or 1", ErrDeviceTree, t)
	}
	fb.Tryboot = t == 1
	fb.Partition = int(p)
	return fb, nil
}

func readDTU32(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrDeviceTree, err)
	}
	defer f.Close()
	var b [5]byte
	n, err := io.ReadFull(f, b[:])
	if n != 4 || (err != io.ErrUnexpectedEOF && err != nil) {
		return 0, fmt.Errorf("%w: %s holds %d bytes, want a 4-byte big-endian u32", ErrDeviceTree, path, n)
	}
	return binary.BigEndian.Uint32(b[:4]), nil
}
