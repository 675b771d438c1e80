package bundle

import (
	"crypto"
	"fmt"
	"io"
)

// Countersign copies the bundle read from r to w with one more signature,
// made by key, over the same manifest. The payload is copied unchanged. It
// checks the bundle's structure, not its existing signatures: verify first
// when that matters.
func Countersign(w io.Writer, r io.Reader, key crypto.Signer) (string, error) {
	lim := Limits{}.withDefaults()
	_, raw, err := readSigned(r, lim)
	if err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	s, err := parseSigned(raw, lim)
	if err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	if _, err := unmarshalManifest(s.Manifest, lim); err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	kid, err := s.sign(key)
	if err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	if err := writeHead(w, s); err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	if _, err := io.Copy(w, r); err != nil {
		return "", fmt.Errorf("countersign: copy payload: %w", err)
	}
	return kid, nil
}
