package device

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadState: whatever state.json holds, Load returns a record or an
// error, never panics, and what it accepts saves and loads back the same.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"format":1,"state":"idle","security_version":0,"updated":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"format":1,"state":"trial","bundle":{"name":"os","version":"1.0.0","security_version":3,"digest":"ab"},"target":"B","components":[{"name":"rootfs","kind":"image","version":"1.0.0","target":"/dev/x","size":1,"sha256":"","written":0,"done":false}],"security_version":2,"updated":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"format":1,"state":"bogus"}`))
	f.Add([]byte(`{garbage`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, stateFile), b, 0o600)
		s := &Store{Dir: dir}
		rec, err := s.Load()
		if err != nil {
			return
		}
		if err := s.Save(rec); err != nil {
			t.Fatalf("Save of a loaded record: %v", err)
		}
		again, err := s.Load()
		if err != nil || again.State != rec.State || again.SecurityVersion != rec.SecurityVersion {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, rec)
		}
	})
}

// FuzzUnpack: no tar stream makes unpack panic or create anything outside
// the package directory.
func FuzzUnpack(f *testing.F) {
	f.Add(tarOf(map[string]string{"bin/app": "x", "etc/conf": "y"}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "pkg", "v")
		_ = unpack(bytes.NewReader(b), dst, 1<<16)
		ents, _ := os.ReadDir(parent)
		for _, e := range ents {
			if e.Name() != "pkg" {
				t.Fatalf("unpack created %s outside the package", e.Name())
			}
		}
		ents, _ = os.ReadDir(filepath.Join(parent, "pkg"))
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "v") {
				t.Fatalf("unpack created pkg/%s beside the version dir", e.Name())
			}
		}
	})
}

// FuzzConfig: no device.yaml makes ParseConfig panic.
func FuzzConfig(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join("..", "examples", "device.yaml"))
	f.Add(b)
	f.Add([]byte("reboot: {policy: window, window: '0 3 * * 1-5 2h'}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseConfig(b)
	})
}
