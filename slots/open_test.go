package slots

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenUBootMirror(t *testing.T) {
	dir := t.TempDir()
	primary := filepath.Join(dir, "uboot.env")
	os.WriteFile(primary, make([]byte, 0x4000), 0o644)
	seedCopy(t, primary, 0, raucEnv("A B", "3", "3"), 0x4000, false, 0)
	fw := filepath.Join(dir, "fw_env.config")
	os.WriteFile(fw, []byte(primary+" 0x0000 0x4000\n"), 0o644)
	cmdline := filepath.Join(dir, "cmdline")
	os.WriteFile(cmdline, []byte("console=ttyAMA0 autopatcher.slot=A rauc.slot=A"), 0o644)
	c, err := ParseConfig([]byte(`
bootloader:
  type: uboot
  uboot: {fw_env_config: ` + fw + `, mirror: ` + filepath.Join(dir, "uboot-redund.env") + `}
slots:
  rootfs:
    a: {device: /dev/vda2}
    b: {device: /dev/vda3}
paths: {cmdline: ` + cmdline + `}
`))
	if err != nil {
		t.Fatal(err)
	}
	bl, err := Open(c)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		op, slot, booted        string
		primary, pending, trial string
	}{
		{"try", "B", "A", "A", "B", ""},
		{"boot", "B", "B", "A", "", "B"}, // what boot.cmd does: B_LEFT 1 → 0
		{"commit", "B", "B", "B", "", ""},
		{"try", "A", "B", "B", "A", ""},
		{"bad", "A", "B", "B", "", ""},
	}
	for i, s := range steps {
		var err error
		switch s.op {
		case "boot":
			u := bl.(*UBoot)
			err = u.Store.Update(func(e Env) error { e[leftVar(s.slot)] = "0"; return nil })
		default:
			err = apply(bl.(*UBoot), s.op, s.slot)
		}
		if err != nil {
			t.Fatalf("step %d %s(%s): %v", i, s.op, s.slot, err)
		}
		os.WriteFile(cmdline, []byte("autopatcher.slot="+s.booted), 0o644)
		st, err := bl.State()
		if err != nil || st.Primary != s.primary || st.Pending != s.pending || st.Trial != s.trial {
			t.Errorf("step %d %s(%s): state %+v, %v; want primary %s pending %q trial %q", i, s.op, s.slot, st, err, s.primary, s.pending, s.trial)
		}
	}
}

func TestOpenUnknown(t *testing.T) {
	c := &Config{Bootloader: BootloaderConfig{Type: "sim", Sim: &SimConfig{Dir: t.TempDir()}}}
	registryMu.Lock()
	_, registered := registry["sim"]
	registryMu.Unlock()
	if registered {
		t.Skip("sim registered in this binary")
	}
	if _, err := Open(c); !errors.Is(err, ErrUnknownBootloader) {
		t.Errorf("Open(sim) without slots/sim: err = %v, want ErrUnknownBootloader", err)
	}
	Register("fake", func(*Config) (Bootloader, error) { return nil, errors.New("fake called") })
	c.Bootloader.Type = "fake"
	if _, err := Open(c); err == nil || err.Error() != "fake called" {
		t.Errorf("Open(fake) err = %v, want the registered constructor's", err)
	}
}
