package bundle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic opens every bundle file. Like PNG's signature it contains a non-ASCII
// byte, CR LF, ^Z and LF, so text-mode transfers and truncated copies are
// detected at once.
var Magic = [8]byte{0x89, 'A', 'P', 'B', '\r', '\n', 0x1a, '\n'}

// HeaderSize is the length of the fixed header.
const HeaderSize = 16

// header is the fixed 16-byte file header:
//
//	0  8  magic
//	8  2  format version, big endian
//	10 2  flags, must be zero
//	12 4  length of the signed section, big endian
type header struct {
	Version   uint16
	SignedLen uint32
}

func (h header) marshal() []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic[:])
	binary.BigEndian.PutUint16(b[8:], h.Version)
	binary.BigEndian.PutUint32(b[12:], h.SignedLen)
	return b
}

// readHeader reads and checks the fixed header.
func readHeader(r io.Reader, lim Limits) (header, error) {
	var b [HeaderSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return header{}, readErr("header", err)
	}
	if [8]byte(b[:8]) != Magic {
		return header{}, fmt.Errorf("read header: bad magic % x (not a bundle): %w", b[:8], ErrMalformed)
	}
	h := header{
		Version:   binary.BigEndian.Uint16(b[8:]),
		SignedLen: binary.BigEndian.Uint32(b[12:]),
	}
	if h.Version != FormatVersion {
		return header{}, fmt.Errorf("read header: format version %d, this reader supports %d: %w", h.Version, FormatVersion, ErrUnsupportedVersion)
	}
	if flags := binary.BigEndian.Uint16(b[10:]); flags != 0 {
		return header{}, fmt.Errorf("read header: unknown flags %#04x: %w", flags, ErrMalformed)
	}
	if h.SignedLen == 0 {
		return header{}, fmt.Errorf("read header: empty signed section: %w", ErrMalformed)
	}
	if int64(h.SignedLen) > lim.signedMax() {
		return header{}, fmt.Errorf("read header: signed section of %d bytes exceeds the limit of %d: %w", h.SignedLen, lim.signedMax(), ErrTooLarge)
	}
	return h, nil
}

// readErr turns a short read into ErrTruncated, naming what was being read.
func readErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("read %s: %w", what, ErrTruncated)
	}
	return fmt.Errorf("read %s: %w", what, err)
}
