// Package x86_test checks the x86 board files against the slots package:
// the slot config opens as the GRUB backend, grub.cfg is valid GRUB script,
// and a grubenv made with grub-editenv as the image recipe says is read as
// intended.
package x86_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/autopatcher/autopatcher/slots"
)

func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (Debian package %s) is required under CI", name, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return p
}

func TestGrubCfgSyntax(t *testing.T) {
	check := tool(t, "grub-script-check", "grub-common")
	if out, err := exec.Command(check, "grub.cfg").CombinedOutput(); err != nil {
		t.Errorf("grub-script-check grub.cfg: %v: %s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.cfg")
	os.WriteFile(bad, []byte("if [ x ]; then\n"), 0o644)
	if err := exec.Command(check, bad).Run(); err == nil {
		t.Error("grub-script-check accepted a broken script, so it proves nothing")
	}
}

func TestSlotConfigAndFreshEnv(t *testing.T) {
	editenv := tool(t, "grub-editenv", "grub-common")
	cfg, err := slots.LoadConfig("slots.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bootloader.Type != slots.BootGrub {
		t.Fatalf("bootloader type %q, want grub", cfg.Bootloader.Type)
	}
	// The image recipe's grubenv, made with grub-editenv.
	env := filepath.Join(t.TempDir(), "grubenv")
	for _, args := range [][]string{
		{env, "create"},
		{env, "set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=1", "B_TRY=0"},
	} {
		if out, err := exec.Command(editenv, args...).CombinedOutput(); err != nil {
			t.Fatalf("grub-editenv %q: %v: %s", args, err, out)
		}
	}
	cfg.Bootloader.Grub.EnvPath = env
	bl, err := slots.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := bl.State()
	if err != nil {
		t.Fatal(err)
	}
	if bs.Primary != "A" || bs.Pending != "" || bs.Trial != "" || len(bs.Bad) != 0 {
		t.Errorf("fresh image state = %+v, want primary A, nothing pending, nothing bad", bs)
	}
	if err := bl.Try("B"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(editenv, env, "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "ORDER=B A\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\nAUTOPATCHER_TRIAL=B\n"; string(out) != want {
		t.Errorf("after Try(B) grub-editenv lists %q, want %q", out, want)
	}
}
