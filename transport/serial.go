package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"

	"go.bug.st/serial"
)

// Serial framing carries the same messages over a console UART for recovery
// (no MQTT, no topics). One frame:
//
//	magic   2 bytes  "AP"
//	channel 1 byte   1 hello, 2 status, 3 get, 4 cmd, 5 data, 6 offer
//	length  4 bytes  big-endian length of the payload, at most MaxMessage
//	hcrc    2 bytes  big-endian low 16 bits of the CRC-32C (Castagnoli) of channel and length
//	payload          the msgp-encoded message
//	crc     4 bytes  big-endian CRC-32C of the payload
//
// The header has its own check so that a corrupted length is caught before
// the receiver waits for bytes that will never come. A receiver that meets
// noise, a bad header, a CRC mismatch or a payload that does not decode
// drops it, resynchronises on the next "AP" and counts it; line noise never
// ends the session.

var frameMagic = [2]byte{'A', 'P'}

var channelCodes = []Channel{1: ChHello, 2: ChStatus, 3: ChGet, 4: ChCmd, 5: ChData, 6: ChOffer}

func channelCode(ch Channel) byte {
	for i, c := range channelCodes {
		if c == ch && i > 0 {
			return byte(i)
		}
	}
	return 0
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Framer reads and writes framed messages on a byte stream such as a serial
// port. Send is safe for concurrent use; Recv is for one reader.
type Framer struct {
	r  *bufio.Reader
	w  io.Writer
	mu sync.Mutex
	// Dropped counts frames (or runs of noise) discarded by Recv.
	Dropped atomic.Uint64
}

// NewFramer returns a Framer on rw.
func NewFramer(rw io.ReadWriter) *Framer {
	return &Framer{r: bufio.NewReaderSize(rw, 64<<10), w: rw}
}

// Send frames and writes m.
func (f *Framer) Send(m Message) error {
	p, err := Encode(m)
	if err != nil {
		return err
	}
	if len(p) > MaxMessage {
		return fmt.Errorf("send frame: %w: %d bytes", ErrMalformed, len(p))
	}
	buf := make([]byte, 0, len(p)+13)
	buf = append(buf, frameMagic[:]...)
	buf = append(buf, channelCode(ChannelOf(m)))
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(p)))
	buf = binary.BigEndian.AppendUint16(buf, uint16(crc32.Checksum(buf[2:7], castagnoli)))
	buf = append(buf, p...)
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(p, castagnoli))
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.w.Write(buf); err != nil {
		return fmt.Errorf("send frame: %w", err)
	}
	return nil
}

// errBadFrame marks a frame to skip; Recv never returns it.
var errBadFrame = errors.New("bad frame")

// Recv returns the next good message. It returns only read errors (io.EOF
// when the stream ends); bad frames are skipped and counted in Dropped.
func (f *Framer) Recv() (Message, error) {
	for {
		m, err := f.next()
		if errors.Is(err, errBadFrame) {
			f.Dropped.Add(1)
			continue
		}
		return m, err
	}
}

func (f *Framer) next() (Message, error) {
	// Find the magic.
	skipped := false
	for {
		b, err := f.r.ReadByte()
		if err != nil {
			return nil, err
		}
		if b != frameMagic[0] {
			skipped = true
			continue
		}
		nb, err := f.r.Peek(1)
		if err != nil {
			return nil, err
		}
		if nb[0] != frameMagic[1] {
			skipped = true
			continue
		}
		f.r.ReadByte()
		break
	}
	if skipped {
		f.Dropped.Add(1)
	}
	// Peek the header so that a bad one is resynchronised from the byte
	// after the magic, not after the header.
	hdr, err := f.r.Peek(7)
	if err != nil {
		return nil, err
	}
	code, n := int(hdr[0]), binary.BigEndian.Uint32(hdr[1:5])
	if uint16(crc32.Checksum(hdr[:5], castagnoli)) != binary.BigEndian.Uint16(hdr[5:7]) ||
		code == 0 || code >= len(channelCodes) || n > MaxMessage {
		return nil, errBadFrame
	}
	f.r.Discard(7)
	body := make([]byte, n+4)
	if _, err := io.ReadFull(f.r, body); err != nil {
		return nil, err
	}
	if crc32.Checksum(body[:n], castagnoli) != binary.BigEndian.Uint32(body[n:]) {
		return nil, errBadFrame
	}
	m, err := Decode(channelCodes[code], body[:n])
	if err != nil {
		return nil, errBadFrame
	}
	return m, nil
}

// OpenSerial opens a serial port (e.g. /dev/ttyUSB0, /dev/ttyAMA0) at baud,
// 8N1, raw.
func OpenSerial(path string, baud int) (serial.Port, error) {
	p, err := serial.Open(path, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("open serial %s: %w", path, err)
	}
	return p, nil
}
