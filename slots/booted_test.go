package slots

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeBoard builds a config whose devices are files under a temp dir, with
// /dev/disk links and a cmdline file.
func fakeBoard(t *testing.T, cmdline string) *Config {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"vda2", "vda3"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"disk/by-partuuid/1234abcd-02": "../../vda2",
		"disk/by-partuuid/1234abcd-03": "../../vda3",
		"disk/by-uuid/0f0e-aaaa":       "../../vda3",
		"disk/by-partlabel/root-a":     "../../vda2",
	}
	for l, target := range links {
		p := filepath.Join(dir, l)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmdline+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mountinfo"), []byte("22 1 0:21 / /proc rw - proc proc rw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Config{
		Bootloader: BootloaderConfig{Type: BootUBoot},
		Classes: map[string]*Class{"rootfs": {
			A: &Slot{Device: filepath.Join(dir, "vda2"), Type: TypeFile, Size: 1 << 20},
			B: &Slot{Device: filepath.Join(dir, "vda3"), Type: TypeFile, Size: 1 << 20},
		}},
		Paths: Paths{Cmdline: filepath.Join(dir, "cmdline"), Mountinfo: filepath.Join(dir, "mountinfo"), DevDisk: filepath.Join(dir, "disk")},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConfigBooted(t *testing.T) {
	c := fakeBoard(t, "")
	dir := filepath.Dir(c.Paths.Cmdline)
	tests := []struct {
		cmdline, want string
		err           error
	}{
		{"console=ttyAMA0 autopatcher.slot=B root=/dev/vda2", "B", nil},
		{"rauc.slot=A quiet", "A", nil},
		{"autopatcher.slot=A rauc.slot=B", "A", nil},
		{`foo="a b autopatcher.slot=B" rauc.slot=A`, "A", nil},
		{"root=" + filepath.Join(dir, "vda3") + " rw", "B", nil},
		{"root=PARTUUID=1234ABCD-02 rootwait", "A", nil},
		{"root=PARTUUID=1234abcd-03", "B", nil},
		{"root=UUID=0f0e-aaaa", "B", nil},
		{"root=PARTLABEL=root-a", "A", nil},
		{"root=" + filepath.Join(dir, "disk/by-partuuid/1234abcd-03"), "B", nil},
		{"root=PARTUUID=ffff-01", "", ErrUnknownBooted},
		{"root=/dev/sda1", "", ErrUnknownBooted},
		{"rauc.slot=C", "", ErrUnknownBooted},
		{"quiet", "", ErrUnknownBooted},
	}
	for _, tt := range tests {
		got, err := c.Booted(tt.cmdline)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("Booted(%q) = %q, %v; want %q, %v", tt.cmdline, got, err, tt.want, tt.err)
		}
	}
}

func TestBootedNoConfig(t *testing.T) {
	if got, err := Booted("root=/dev/x rauc.slot=B"); got != "B" || err != nil {
		t.Errorf("Booted = %q, %v; want B", got, err)
	}
	if _, err := Booted("root=/dev/x"); !errors.Is(err, ErrUnknownBooted) {
		t.Errorf("Booted err = %v, want ErrUnknownBooted", err)
	}
}

func TestInactive(t *testing.T) {
	c := fakeBoard(t, "root=PARTUUID=1234abcd-02")
	s, err := c.Inactive("rootfs")
	if err != nil || s.BootName != "B" {
		t.Fatalf("Inactive = %+v, %v; want B", s, err)
	}
	a, err := c.Active("rootfs")
	if err != nil || a.BootName != "A" {
		t.Fatalf("Active = %+v, %v; want A", a, err)
	}
	if _, err := c.Inactive("firmware"); !errors.Is(err, ErrNoClass) {
		t.Errorf("Inactive(firmware) err = %v, want ErrNoClass", err)
	}
}
