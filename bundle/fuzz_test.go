package bundle

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func goldenFiles(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, g := range goldens {
		b, err := os.ReadFile(filepath.Join("testdata", g.file))
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzManifestDecode: any input either fails to decode, or decodes to a
// valid manifest whose encoding is the input itself (one encoding per
// manifest).
func FuzzManifestDecode(f *testing.F) {
	for _, b := range goldenFiles(f) {
		info, err := Inspect(bytes.NewReader(b))
		if err != nil {
			f.Fatal(err)
		}
		s, err := parseSigned(info.Signed, Limits{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s.Manifest)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := UnmarshalManifest(data)
		if err != nil {
			return
		}
		again, err := MarshalManifest(m)
		if err != nil {
			t.Fatalf("decoded manifest does not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("round trip changed the encoding")
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded manifest does not validate: %v", err)
		}
	})
}

// FuzzReader feeds arbitrary files to Inspect and to Open with the golden
// bundles' keys. Nothing may panic; a bundle that opens must return its
// signed section unchanged, and one that reads to the end must have
// delivered exactly the declared sizes. To reach past the signature check,
// the input is also read a second time with whatever manifest bytes it
// carries re-signed by a trusted key: a validly signed but hostile manifest
// and payload must be refused just as cleanly.
func FuzzReader(f *testing.F) {
	for _, b := range goldenFiles(f) {
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	trust := &Trust{Keys: []PublicKey{pubOf(f, seedKey("vendor")), pubOf(f, seedKey("operator"))}}
	f.Fuzz(func(t *testing.T, data []byte) {
		readFuzz(t, data, trust)
		if resigned := resignFuzz(data); resigned != nil {
			readFuzz(t, resigned, trust)
		}
	})
}

// resignFuzz returns data with its manifest bytes signed by the test vendor
// key, or nil if data has no parseable signed section.
func resignFuzz(data []byte) []byte {
	if len(data) < HeaderSize {
		return nil
	}
	h, err := readHeader(bytes.NewReader(data), Limits{})
	if err != nil || int64(len(data)) < HeaderSize+int64(h.SignedLen) {
		return nil
	}
	end := HeaderSize + int(h.SignedLen)
	s, err := parseSigned(data[HeaderSize:end], Limits{})
	if err != nil {
		return nil
	}
	s.Signatures = nil
	if _, err := s.sign(seedKey("vendor")); err != nil {
		return nil
	}
	var out bytes.Buffer
	if err := writeHead(&out, s); err != nil {
		return nil
	}
	out.Write(data[end:])
	return out.Bytes()
}

func readFuzz(t *testing.T, data []byte, trust *Trust) {
	if info, err := Inspect(bytes.NewReader(data)); err == nil {
		if !bytes.Equal(info.Signed, data[HeaderSize:info.DataOffset]) {
			t.Fatalf("Inspect: signed section differs from the file's")
		}
	}
	for _, ahead := range []int{0, 2} {
		r, err := Open(bytes.NewReader(data), trust, WithReadAhead(ahead))
		if err != nil {
			continue
		}
		if !bytes.Equal(r.SignedManifest(), data[HeaderSize:r.DataOffset()]) {
			t.Fatalf("SignedManifest differs from the file's signed section")
		}
		for {
			c, p, err := r.Next()
			if err != nil {
				break
			}
			n, err := io.Copy(io.Discard, p)
			if err == nil && uint64(n) != c.Size {
				t.Fatalf("component %s: read %d bytes, declared %d", c.Name, n, c.Size)
			}
			if err != nil {
				break
			}
		}
		r.Close()
	}
}
