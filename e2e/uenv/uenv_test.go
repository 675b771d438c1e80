package uenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	vars := map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "3"}
	b, err := Encode(vars, Size)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != Size {
		t.Errorf("size: got %d, want %d", len(b), Size)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range vars {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	b[100] ^= 1
	if _, err := Decode(b); !errors.Is(err, ErrCRC) {
		t.Errorf("corrupted blob: got %v, want ErrCRC", err)
	}
}

func TestEncodeBad(t *testing.T) {
	tests := []map[string]string{
		{"": "x"},
		{"a=b": "x"},
		{"a": "x\x00y"},
		{"big": strings.Repeat("x", Size)},
	}
	for _, vars := range tests {
		if _, err := Encode(vars, Size); err == nil {
			t.Errorf("Encode(%q): no error", vars)
		}
	}
}

// TestFwPrintenvReads checks the blob against Debian's fw_printenv.
func TestFwPrintenvReads(t *testing.T) {
	bin, err := exec.LookPath("fw_printenv")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("fw_printenv not installed (libubootenv-tool)")
		}
		t.Skip("fw_printenv not installed (libubootenv-tool)")
	}
	dir := t.TempDir()
	env := filepath.Join(dir, "uboot.env")
	b, err := Encode(map[string]string{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2"}, Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(cfg, []byte(env+" 0x0000 0x4000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", cfg, "BOOT_ORDER", "BOOT_A_LEFT").CombinedOutput()
	if err != nil {
		t.Fatalf("fw_printenv: %v: %s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "BOOT_ORDER=A B\nBOOT_A_LEFT=2"; got != want {
		t.Errorf("fw_printenv: got %q, want %q", got, want)
	}
}
