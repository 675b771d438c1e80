package bundle

import (
	"fmt"
	"io"
)

// Info is what Inspect found in a bundle. Nothing in it is verified.
type Info struct {
	FormatVersion int
	DataOffset    int64 // file offset of the first stored chunk
	Manifest      *Manifest
	Signatures    []Signature
	Signed        []byte // the signed section (DataOffset-HeaderSize bytes)
}

// Inspect reads the header and the signed section and decodes the manifest
// and the signatures' key ids WITHOUT verifying any signature. Use it only
// to show what a bundle claims to be; use Open to trust it.
func Inspect(r io.Reader, opts ...Option) (*Info, error) {
	o := newOptions(opts)
	h, raw, err := readSigned(r, o.limits)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	s, err := parseSigned(raw, o.limits)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	sigs, err := s.signatures()
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	m, err := unmarshalManifest(s.Manifest, o.limits)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	return &Info{
		FormatVersion: int(h.Version),
		DataOffset:    HeaderSize + int64(len(raw)),
		Manifest:      m,
		Signatures:    sigs,
		Signed:        raw,
	}, nil
}
