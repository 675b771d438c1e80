package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMBR(t *testing.T) {
	b, err := MBR(Layout(), 0x12345678)
	if err != nil {
		t.Fatal(err)
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		t.Errorf("boot signature: got %x %x", b[510], b[511])
	}
	if got := binary.LittleEndian.Uint32(b[440:]); got != 0x12345678 {
		t.Errorf("disk signature: got %#x", got)
	}
	for i, p := range Layout() {
		e := b[446+16*i:]
		if got := int64(binary.LittleEndian.Uint32(e[8:])) * SectorSize; got != p.Start {
			t.Errorf("partition %d start: got %d, want %d", i+1, got, p.Start)
		}
		if got := int64(binary.LittleEndian.Uint32(e[12:])) * SectorSize; got != p.Size {
			t.Errorf("partition %d size: got %d, want %d", i+1, got, p.Size)
		}
		if e[4] != p.Type {
			t.Errorf("partition %d type: got %#x, want %#x", i+1, e[4], p.Type)
		}
		if (e[0] == 0x80) != p.Bootable {
			t.Errorf("partition %d bootable flag: got %#x", i+1, e[0])
		}
	}
}

func TestMBRBadLayout(t *testing.T) {
	tests := []struct {
		name  string
		parts []Partition
	}{
		{"overlap", []Partition{{Name: "a", Start: MiB, Size: 2 * MiB}, {Name: "b", Start: 2 * MiB, Size: MiB}}},
		{"unaligned", []Partition{{Name: "a", Start: MiB + 1, Size: MiB}}},
		{"empty", []Partition{{Name: "a", Start: MiB}}},
		{"five", make([]Partition, 5)},
		{"over the MBR", []Partition{{Name: "a", Start: 0, Size: MiB}}},
	}
	for _, tt := range tests {
		if _, err := MBR(tt.parts, 0); !errors.Is(err, ErrLayout) {
			t.Errorf("%s: got %v, want ErrLayout", tt.name, err)
		}
	}
}

// TestCpioListsWithCpio checks the archive against GNU cpio's reader.
func TestCpioListsWithCpio(t *testing.T) {
	bin, err := exec.LookPath("cpio")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("cpio not installed")
		}
		t.Skip("cpio not installed")
	}
	var buf bytes.Buffer
	c := NewCpio(&buf)
	for _, step := range []error{
		c.Dir("dev", 0o755),
		c.CharDev("dev/console", 0o600, 5, 1),
		c.File("init", 0o755, []byte("#!/bin/true\n")),
		c.Symlink("bin/reboot", "/init"),
		c.File("etc/odd", 0o644, []byte("abc")),
		c.Close(),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	cmd := exec.Command(bin, "-itv", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v: %s", err, out)
	}
	want := []string{"drwxr-xr-x", "crw-------", "-rwxr-xr-x", "lrwxrwxrwx", "-rw-r--r--"}
	names := []string{"dev", "dev/console", "init", "bin/reboot -> /init", "etc/odd"}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("cpio listed %d entries, want %d:\n%s", len(lines), len(want), out)
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, want[i]) || !strings.HasSuffix(l, names[i]) {
			t.Errorf("entry %d: got %q, want mode %s name %s", i, l, want[i], names[i])
		}
	}
}
