package device

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestUnpackRefusesUnsafeEntries(t *testing.T) {
	type ent struct {
		h    tar.Header
		body string
	}
	reg := func(name, body string) ent {
		return ent{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, body}
	}
	tests := []struct {
		name string
		ents []ent
		ok   bool
	}{
		{"plain", []ent{{tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, ""}, reg("bin/app", "x"), {tar.Header{Name: "app", Typeflag: tar.TypeSymlink, Linkname: "bin/app"}, ""}}, true},
		{"absolute", []ent{reg("/etc/passwd", "x")}, false},
		{"dotdot", []ent{reg("../escape", "x")}, false},
		{"dotdot inside", []ent{reg("a/../../escape", "x")}, false},
		{"symlink absolute", []ent{{tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, ""}}, false},
		{"symlink out", []ent{{tar.Header{Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "../../x"}, ""}}, false},
		{"write through symlink", []ent{{tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "."}, ""}, {tar.Header{Name: "l2", Typeflag: tar.TypeSymlink, Linkname: "l/.."}, ""}, reg("l2/x", "x")}, false},
		{"hard link out", []ent{{tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../x"}, ""}}, false},
		{"device node", []ent{{tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, ""}}, false},
		{"fifo", []ent{{tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}, ""}}, false},
		{"too large", []ent{reg("big", string(make([]byte, 5000)))}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range tc.ents {
				tw.WriteHeader(&e.h)
				tw.Write([]byte(e.body))
			}
			tw.Close()
			parent := t.TempDir()
			dst := filepath.Join(parent, "pkg", "1.0.0")
			err := unpack(bytes.NewReader(buf.Bytes()), dst, 4096)
			if tc.ok != (err == nil) {
				t.Fatalf("unpack = %v, want ok %v", err, tc.ok)
			}
			if !tc.ok && !errors.Is(err, ErrUnsafePath) && !errors.Is(err, ErrShortPayload) {
				t.Errorf("unpack = %v, want ErrUnsafePath or ErrShortPayload", err)
			}
			if _, err := os.Lstat(filepath.Join(parent, "escape")); err == nil {
				t.Errorf("a file escaped the package root")
			}
			if tc.ok {
				if b, _ := os.ReadFile(filepath.Join(dst, "app")); string(b) != "x" {
					t.Errorf("app -> bin/app reads %q", b)
				}
			}
		})
	}
}

func TestCommitPackageSwitchesLinks(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"1", "2", "3"} {
		os.MkdirAll(filepath.Join(dir, v), 0o755)
		if err := commitPackage(filepath.Join(dir, v)); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := os.Readlink(filepath.Join(dir, currentLink))
	prev, _ := os.Readlink(filepath.Join(dir, previousLink))
	if cur != "3" || prev != "2" {
		t.Errorf("current %q previous %q, want 3 and 2", cur, prev)
	}
	if _, err := os.Stat(filepath.Join(dir, "1")); err == nil {
		t.Errorf("version 1 kept after two newer commits")
	}
	if err := commitPackage(filepath.Join(dir, "3")); err != nil {
		t.Errorf("commit again = %v, want a no-op", err)
	}
}
