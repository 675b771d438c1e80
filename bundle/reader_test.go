package bundle

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	spec := mediumSpec(dir, "rt")
	b := buildSpec(t, spec, vendorKey)
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"default", nil},
		{"synchronous", []Option{WithReadAhead(0)}},
		{"one ahead, payload hash", []Option{WithReadAhead(1), WithPayloadHash(true)}},
		{"synchronous, payload hash", []Option{WithReadAhead(0), WithPayloadHash(true)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(b, trustOf(t, vendorKey), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range spec.Components {
				want, err := os.ReadFile(filepath.Join(dir, c.Source))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got[c.Name], want) {
					t.Errorf("component %s: payload differs (%d bytes, want %d)", c.Name, len(got[c.Name]), len(want))
				}
			}
		})
	}
}

func TestReaderAccessors(t *testing.T) {
	b := buildSpec(t, mediumSpec(t.TempDir(), "acc"), vendorKey, operatorKey)
	r, err := Open(bytes.NewReader(b), trustOf(t, vendorKey, operatorKey))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m := r.Manifest()
	if got, want := len(r.Signers()), 2; got != want {
		t.Errorf("Signers() = %v, want %d ids", r.Signers(), want)
	}
	if got, want := r.Signers()[0], pubOf(t, vendorKey).ID; got != want {
		t.Errorf("Signers()[0] = %s, want %s", got, want)
	}
	if got, want := m.Expires-m.Created, int64(2160*3600); got != want {
		t.Errorf("Expires-Created = %d, want %d", got, want)
	}
	signed := r.SignedManifest()
	if !bytes.Equal(signed, b[HeaderSize:r.DataOffset()]) {
		t.Errorf("SignedManifest() is not the file's signed section")
	}
	vm, err := VerifyManifest(signed, trustOf(t, operatorKey))
	if err != nil {
		t.Fatalf("VerifyManifest: %v", err)
	}
	if vm.Name != m.Name || len(vm.Components) != len(m.Components) {
		t.Errorf("VerifyManifest returned %s with %d components, want %s with %d", vm.Name, len(vm.Components), m.Name, len(m.Components))
	}
	if _, err := VerifyManifest(signed, trustOf(t, attackerKey)); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("VerifyManifest with an untrusted key: %v, want ErrUnknownKey", err)
	}
	if int64(len(b)) != r.DataOffset()+m.StoredSize() {
		t.Errorf("file is %d bytes, DataOffset+StoredSize = %d", len(b), r.DataOffset()+m.StoredSize())
	}
	// Every chunk can be located with Layout and verified alone.
	layout := Layout(m, r.DataOffset())
	chunks := 0
	for ci := range m.Components {
		c := &m.Components[ci]
		var whole []byte
		for i, e := range layout[ci] {
			plain, err := c.VerifyChunk(i, b[e.Offset:e.Offset+e.Length])
			if err != nil {
				t.Fatalf("VerifyChunk(%s, %d): %v", c.Name, i, err)
			}
			whole = append(whole, plain...)
			chunks++
		}
		if sum := sha256.Sum256(whole); !bytes.Equal(sum[:], c.SHA256) {
			t.Errorf("component %s: chunks reassembled do not match its sha256", c.Name)
		}
	}
	if chunks < 10 {
		t.Errorf("medium bundle has %d chunks, want several per component", chunks)
	}
	if _, err := m.Components[0].VerifyChunk(len(m.Components[0].Chunks), nil); !errors.Is(err, ErrCorruptChunk) {
		t.Errorf("VerifyChunk out of range: %v, want ErrCorruptChunk", err)
	}
}

func TestNextSkipsUnreadPayload(t *testing.T) {
	b := buildSpec(t, mediumSpec(t.TempDir(), "skip"), vendorKey)
	r, err := Open(bytes.NewReader(b), trustOf(t, vendorKey))
	if err != nil {
		t.Fatal(err)
	}
	c, p, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, p, 1000); err != nil {
		t.Fatal(err)
	}
	var names []string
	names = append(names, c.Name)
	for {
		c, _, err := r.Next() // payloads left unread
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, c.Name)
	}
	if got, want := len(names), 3; got != want {
		t.Errorf("Next returned %v, want 3 components", names)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after the end = %v, want io.EOF", err)
	}
}

func TestCloseStopsReadAhead(t *testing.T) {
	b := buildSpec(t, mediumSpec(t.TempDir(), "close"), vendorKey)
	r, err := Open(bytes.NewReader(b), trustOf(t, vendorKey), WithReadAhead(2))
	if err != nil {
		t.Fatal(err)
	}
	_, p, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close() // idempotent
}

func TestInstallOrder(t *testing.T) {
	m := &Manifest{Components: []Component{
		{Name: "app", Depends: []Dependency{{Name: "lib"}, {Name: "installed-elsewhere"}}},
		{Name: "lib", Depends: []Dependency{{Name: "rootfs"}}},
		{Name: "rootfs"},
		{Name: "conf"},
	}}
	order, err := m.InstallOrder()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range order {
		got = append(got, m.Components[i].Name)
	}
	want := []string{"rootfs", "lib", "app", "conf"}
	if len(got) != len(want) {
		t.Fatalf("InstallOrder = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("InstallOrder = %v, want %v", got, want)
			break
		}
	}
	m.Components[2].Depends = []Dependency{{Name: "app"}}
	if _, err := m.InstallOrder(); err == nil || !errors.Is(err, ErrMalformed) {
		t.Errorf("InstallOrder with a cycle: %v, want ErrMalformed", err)
	}
}
