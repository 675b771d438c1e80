package slots

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tbBoard is a fake Raspberry Pi: a FAT partition holding autoboot.txt, a
// tmpfs /run with the reboot parameter, and the firmware's device-tree
// report, all in a temporary directory.
type tbBoard struct {
	t        *testing.T
	autoboot string
	param    string
	dt       string
	tb       *Tryboot
}

const tbInitial = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"

func newTbBoard(t *testing.T) *tbBoard {
	t.Helper()
	dir := t.TempDir()
	b := &tbBoard{
		t:        t,
		autoboot: filepath.Join(dir, "bootsel", "autoboot.txt"),
		param:    filepath.Join(dir, "run", "reboot-param"),
		dt:       filepath.Join(dir, "dt"),
	}
	for _, d := range []string{filepath.Dir(b.autoboot), filepath.Dir(b.param), b.dt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(b.autoboot, []byte(tbInitial), 0o644); err != nil {
		t.Fatal(err)
	}
	b.setDT(0, 2)
	tb, err := NewTryboot(TrybootConfig{AutobootPath: b.autoboot, DeviceTreeDir: b.dt, RebootParamPath: b.param})
	if err != nil {
		t.Fatal(err)
	}
	b.tb = tb
	return b
}

func (b *tbBoard) setDT(tryboot, part uint32) {
	b.t.Helper()
	for name, v := range map[string]uint32{"tryboot": tryboot, "partition": part} {
		if err := os.WriteFile(filepath.Join(b.dt, name), binary.BigEndian.AppendUint32(nil, v), 0o444); err != nil {
			b.t.Fatal(err)
		}
	}
}

// reboot does what the firmware does: the reboot parameter (lost with
// /run) sets the one-shot flag unless lost is true; the flag picks the
// [tryboot] section, otherwise [all].
func (b *tbBoard) reboot(lost bool) {
	b.t.Helper()
	param, _ := os.ReadFile(b.param)
	os.Remove(b.param)
	raw, err := os.ReadFile(b.autoboot)
	if err != nil {
		b.t.Fatal(err)
	}
	a, err := ParseAutoboot(raw)
	if err != nil {
		b.t.Fatalf("firmware cannot parse autoboot.txt: %v", err)
	}
	flag := strings.Contains(string(param), "tryboot") && !lost
	part := a.Partition
	if flag && a.Tryboot != 0 {
		part = a.Tryboot
	}
	if flag {
		b.setDT(1, uint32(part))
	} else {
		b.setDT(0, uint32(part))
	}
}

func (b *tbBoard) step(op string) error {
	verb, slot, _ := strings.Cut(op, " ")
	switch verb {
	case "try":
		return b.tb.Try(slot)
	case "commit":
		return b.tb.Commit(slot)
	case "bad":
		return b.tb.MarkBad(slot)
	case "reboot":
		b.reboot(false)
		return nil
	case "reboot-lost-flag":
		b.reboot(true)
		return nil
	}
	return fmt.Errorf("unknown op %q", op)
}

func (b *tbBoard) snap() string {
	b.t.Helper()
	raw, err := os.ReadFile(b.autoboot)
	if err != nil {
		b.t.Fatal(err)
	}
	a, err := ParseAutoboot(raw)
	if err != nil {
		b.t.Fatalf("autoboot.txt: %v", err)
	}
	if string(raw) != string(a.Bytes()) && string(raw) != tbInitial {
		b.t.Errorf("autoboot.txt not canonical: %q", raw)
	}
	param, err := os.ReadFile(b.param)
	if errors.Is(err, fs.ErrNotExist) {
		param = []byte("-")
	}
	fb, err := ReadFirmwareBoot(b.dt)
	if err != nil {
		b.t.Fatal(err)
	}
	bs, err := b.tb.State()
	if err != nil {
		b.t.Fatalf("State: %v", err)
	}
	fw := fmt.Sprintf("p%d", fb.Partition)
	if fb.Tryboot {
		fw += "+tryboot"
	}
	return fmt.Sprintf("all=%d tryboot=%d param=%q running=%s | primary=%s pending=%s trial=%s bad=%v",
		a.Partition, a.Tryboot, param, fw, bs.Primary, bs.Pending, bs.Trial, bs.Bad)
}

func TestTrybootTransitions(t *testing.T) {
	tests := []struct {
		name string
		ops  []string
		want string
	}{
		{"fresh", nil,
			`all=2 tryboot=3 param="-" running=p2 | primary=A pending= trial= bad=[]`},
		{"try", []string{"try B"},
			`all=2 tryboot=3 param="0 tryboot" running=p2 | primary=A pending=B trial= bad=[]`},
		{"trial boot", []string{"try B", "reboot"},
			`all=2 tryboot=3 param="-" running=p3+tryboot | primary=A pending= trial=B bad=[]`},
		{"commit ends the trial at once", []string{"try B", "reboot", "commit B"},
			`all=3 tryboot=2 param="-" running=p3+tryboot | primary=B pending= trial= bad=[]`},
		{"committed slot boots normally", []string{"try B", "reboot", "commit B", "reboot"},
			`all=3 tryboot=2 param="-" running=p3 | primary=B pending= trial= bad=[]`},
		{"uncommitted trial falls back", []string{"try B", "reboot", "reboot"},
			`all=2 tryboot=3 param="-" running=p2 | primary=A pending= trial= bad=[]`},
		{"lost flag is a failed trial", []string{"try B", "reboot-lost-flag"},
			`all=2 tryboot=3 param="-" running=p2 | primary=A pending= trial= bad=[]`},
		{"failed trial marked bad", []string{"try B", "reboot", "reboot", "bad B"},
			`all=2 tryboot=2 param="-" running=p2 | primary=A pending= trial= bad=[B]`},
		{"trial marked bad while running", []string{"try B", "reboot", "bad B"},
			`all=2 tryboot=2 param="-" running=p3+tryboot | primary=A pending= trial= bad=[B]`},
		{"bad slot is never booted", []string{"try B", "reboot", "bad B", "reboot"},
			`all=2 tryboot=2 param="-" running=p2 | primary=A pending= trial= bad=[B]`},
		{"mark bad cancels a pending try", []string{"try B", "bad B"},
			`all=2 tryboot=2 param="-" running=p2 | primary=A pending= trial= bad=[B]`},
		{"bad slot can be tried again", []string{"try B", "bad B", "try B", "reboot"},
			`all=2 tryboot=3 param="-" running=p3+tryboot | primary=A pending= trial=B bad=[]`},
		{"second update back to A", []string{"try B", "reboot", "commit B", "reboot", "try A", "reboot", "commit A"},
			`all=2 tryboot=3 param="-" running=p2+tryboot | primary=A pending= trial= bad=[]`},
		{"commit primary is a no-op", []string{"commit A"},
			`all=2 tryboot=3 param="-" running=p2 | primary=A pending= trial= bad=[]`},
		{"commit cancels a pending try", []string{"try B", "commit A"},
			`all=2 tryboot=3 param="-" running=p2 | primary=A pending= trial= bad=[]`},
		{"mark primary bad switches to the other", []string{"bad A"},
			`all=3 tryboot=3 param="-" running=p2 | primary=B pending= trial= bad=[A]`},
		{"commit without trial", []string{"commit B"},
			`all=3 tryboot=2 param="-" running=p2 | primary=B pending= trial= bad=[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTbBoard(t)
			steps(t, b, tt.ops...)
			if got := b.snap(); got != tt.want {
				t.Errorf("after %q:\n got %s\nwant %s", tt.ops, got, tt.want)
			}
		})
	}
}

func TestTrybootBooted(t *testing.T) {
	b := newTbBoard(t)
	for _, tt := range []struct {
		tryboot, part uint32
		want          string
	}{{0, 2, "A"}, {1, 3, "B"}, {0, 3, "B"}, {0, 1, "error"}} {
		b.setDT(tt.tryboot, tt.part)
		got, err := b.tb.Booted()
		if err != nil {
			if !errors.Is(err, ErrUnknownBooted) {
				t.Errorf("Booted() error = %v, want ErrUnknownBooted", err)
			}
			got = "error"
		}
		if got != tt.want {
			t.Errorf("partition %d: Booted() = %q, want %q", tt.part, got, tt.want)
		}
	}
	os.Remove(filepath.Join(b.dt, "partition"))
	if _, err := b.tb.Booted(); !errors.Is(err, ErrDeviceTree) {
		t.Errorf("Booted() without device tree: error = %v, want ErrDeviceTree", err)
	}
}

func TestTrybootRefusals(t *testing.T) {
	tests := []struct {
		name string
		ops  []string
		op   string
		want error
	}{
		{"try primary", nil, "try A", ErrTryPrimary},
		{"unknown slot", nil, "try C", ErrNoSlot},
		{"commit unknown", nil, "commit C", ErrNoSlot},
		{"bad unknown", nil, "bad C", ErrNoSlot},
		{"last bootable", []string{"bad B"}, "bad A", ErrNoBootable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTbBoard(t)
			steps(t, b, tt.ops...)
			before, _ := os.ReadFile(b.autoboot)
			if err := b.step(tt.op); !errors.Is(err, tt.want) {
				t.Fatalf("%s: error = %v, want %v", tt.op, err, tt.want)
			}
			if after, _ := os.ReadFile(b.autoboot); string(after) != string(before) {
				t.Errorf("autoboot.txt changed by a refused %s: %q", tt.op, after)
			}
		})
	}
}

// TestTrybootBadAutoboot: a broken autoboot.txt is reported, never
// rewritten by Try or MarkBad; Commit of the running slot repairs it. A
// missing one is never created.
func TestTrybootBadAutoboot(t *testing.T) {
	tests := []struct {
		name, content string
		want          error
	}{
		{"oversized", "[all]\nboot_partition=2\n" + strings.Repeat("# padding\n", 60), ErrAutoboot},
		{"garbage", "\x7fELF\x00\x00garbage", ErrAutoboot},
		{"unknown key", "[all]\nboot_partiton=2\n", ErrAutoboot},
		{"no [all] partition", "[tryboot]\nboot_partition=3\n", ErrAutoboot},
		{"partition not a slot", "[all]\nboot_partition=4\n", ErrAutoboot},
		{"tryboot not a slot", "[all]\nboot_partition=2\n[tryboot]\nboot_partition=1\n", ErrAutoboot},
		{"missing", "", fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTbBoard(t)
			if tt.content == "" {
				os.Remove(b.autoboot)
			} else if err := os.WriteFile(b.autoboot, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := b.tb.State(); !errors.Is(err, tt.want) {
				t.Errorf("State() error = %v, want %v", err, tt.want)
			}
			for _, op := range []string{"try B", "bad B", "bad A"} {
				if err := b.step(op); !errors.Is(err, tt.want) {
					t.Errorf("%s: error = %v, want %v", op, err, tt.want)
				}
				got, _ := os.ReadFile(b.autoboot)
				if string(got) != tt.content {
					t.Errorf("%s rewrote a broken autoboot.txt: %q", op, got)
				}
			}
			if _, err := os.Stat(b.param); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("reboot parameter set despite the refusal: %v", err)
			}
			if tt.content == "" {
				// Missing: bootsel is probably not mounted; nothing is created.
				if err := b.tb.Commit("A"); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Commit(A) without autoboot.txt: error = %v, want ErrNotExist", err)
				}
				if _, err := os.Stat(b.autoboot); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Commit created autoboot.txt in a directory that may be an empty mount point")
				}
				return
			}
			if err := b.tb.Commit("A"); err != nil {
				t.Fatalf("Commit(A) recovery: %v", err)
			}
			if got, _ := os.ReadFile(b.autoboot); string(got) != "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n" {
				t.Errorf("after recovery autoboot.txt = %q", got)
			}
		})
	}
}

func TestTrybootDeviceTree(t *testing.T) {
	tests := []struct {
		name  string
		files map[string][]byte // nil value: remove
		want  string            // FirmwareBoot or error text
	}{
		{"normal", map[string][]byte{"tryboot": {0, 0, 0, 0}, "partition": {0, 0, 0, 2}}, "{Tryboot:false Partition:2}"},
		{"trial", map[string][]byte{"tryboot": {0, 0, 0, 1}, "partition": {0, 0, 0, 3}}, "{Tryboot:true Partition:3}"},
		{"no tryboot", map[string][]byte{"tryboot": nil}, "no such file"},
		{"no partition", map[string][]byte{"partition": nil}, "no such file"},
		{"short", map[string][]byte{"tryboot": {0, 1}}, "holds 2 bytes"},
		{"long", map[string][]byte{"partition": {0, 0, 0, 0, 2}}, "holds 5 bytes"},
		{"little endian", map[string][]byte{"tryboot": {1, 0, 0, 0}}, "tryboot = 16777216"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTbBoard(t)
			for name, content := range tt.files {
				p := filepath.Join(b.dt, name)
				os.Remove(p)
				if content != nil {
					if err := os.WriteFile(p, content, 0o444); err != nil {
						t.Fatal(err)
					}
				}
			}
			fb, err := ReadFirmwareBoot(b.dt)
			got := fmt.Sprintf("%+v", fb)
			if err != nil {
				if !errors.Is(err, ErrDeviceTree) {
					t.Errorf("error %v does not wrap ErrDeviceTree", err)
				}
				got = err.Error()
				// Without the report State cannot tell a trial: error, not "no trial".
				if _, err := b.tb.State(); !errors.Is(err, ErrDeviceTree) {
					t.Errorf("State() error = %v, want ErrDeviceTree", err)
				}
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("ReadFirmwareBoot = %s, want %s", got, tt.want)
			}
		})
	}
}

// tbCut is a writer that takes n bytes and then fails, like a power cut.
type tbCut struct {
	w io.Writer
	n int
}

var errTbCut = errors.New("power cut")

func (c *tbCut) Write(p []byte) (int, error) {
	if len(p) <= c.n {
		c.n -= len(p)
		return c.w.Write(p)
	}
	n, _ := c.w.Write(p[:c.n])
	c.n = 0
	return n, errTbCut
}

// TestTrybootTornWrite cuts each autoboot.txt write at every byte: the live
// file keeps the old state (the cut lands in the temporary file), the
// firmware still parses it and boots a slot.
func TestTrybootTornWrite(t *testing.T) {
	cases := []struct {
		setup []string
		op    string
	}{
		{[]string{"bad B"}, "try B"},
		{[]string{"try B", "reboot"}, "commit B"},
		{[]string{"try B", "reboot"}, "bad B"},
		{nil, "bad A"},
	}
	for _, c := range cases {
		t.Run(c.op, func(t *testing.T) {
			ref := newTbBoard(t)
			steps(t, ref, append(c.setup, c.op)...)
			newBytes, _ := os.ReadFile(ref.autoboot)
			b := newTbBoard(t)
			steps(t, b, c.setup...)
			old, _ := os.ReadFile(b.autoboot)
			oldState := b.snap()
			// A failed write leaves every file as it was, so one board
			// serves every cut.
			for k := 0; k < len(newBytes); k++ {
				b.tb.wrap = func(w io.Writer) io.Writer { return &tbCut{w: w, n: k} }
				if err := b.step(c.op); !errors.Is(err, errTbCut) {
					t.Fatalf("k=%d: %s error = %v, want the cut", k, c.op, err)
				}
				if got, _ := os.ReadFile(b.autoboot); string(got) != string(old) {
					t.Fatalf("k=%d: live autoboot.txt changed: %q", k, got)
				}
				if tmp, _ := os.ReadFile(b.autoboot + ".tmp"); len(tmp) != k {
					t.Fatalf("k=%d: temporary file has %d bytes", k, len(tmp))
				}
				if got := b.snap(); got != oldState {
					t.Fatalf("k=%d: state after cut\n got %s\nwant %s", k, got, oldState)
				}
			}
			// The next attempt succeeds over the leftover temporary file,
			// and the firmware boots from the result.
			b.tb.wrap = nil
			if err := b.step(c.op); err != nil {
				t.Fatalf("%s after the cuts: %v", c.op, err)
			}
			if got, _ := os.ReadFile(b.autoboot); string(got) != string(newBytes) {
				t.Errorf("after the cuts autoboot.txt = %q, want %q", got, newBytes)
			}
			b.reboot(false)
		})
	}
}

func TestNewTrybootConfig(t *testing.T) {
	tests := []struct {
		name  string
		parts map[string]int
		msg   string
	}{
		{"not primary", map[string]int{"A": 2, "B": 5}, "not an MBR primary"},
		{"zero", map[string]int{"A": 0, "B": 3}, "not an MBR primary"},
		{"same", map[string]int{"A": 2, "B": 2}, "also used by"},
		{"one slot", map[string]int{"A": 2}, "need two slots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTryboot(TrybootConfig{BootPartitions: tt.parts})
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("NewTryboot error = %v, want ErrConfig saying %q", err, tt.msg)
			}
		})
	}
	tb, err := NewTryboot(TrybootConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if tb.autoboot != DefaultAutobootPath || tb.dt != DefaultTrybootDT || tb.rebootParam != DefaultRebootParam ||
		tb.parts["A"] != 2 || tb.parts["B"] != 3 {
		t.Errorf("defaults = %+v", tb)
	}
}

func TestOpenTryboot(t *testing.T) {
	b := newTbBoard(t)
	yaml := fmt.Sprintf(`
bootloader:
  type: tryboot
  tryboot:
    autoboot_path: %s
    device_tree_dir: %s
    reboot_param_path: %s
    boot_partitions: {A: 2, B: 3}
slots:
  rootfs:
    a: {device: /dev/mmcblk0p5}
    b: {device: /dev/mmcblk0p6}
`, b.autoboot, b.dt, b.param)
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	bl, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := bl.Try("B"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(b.param); string(got) != "0 tryboot" {
		t.Errorf("reboot-param = %q, want \"0 tryboot\"", got)
	}
	cfg.Classes["rootfs"].B.BootName = "C"
	if _, err := Open(cfg); !errors.Is(err, ErrConfig) {
		t.Errorf("Open with slot C unmapped: error = %v, want ErrConfig", err)
	}
}

func TestTrybootCreatesParamDir(t *testing.T) {
	b := newTbBoard(t)
	os.Remove(b.param)
	os.Remove(filepath.Dir(b.param))
	b.tb.rebootParam = filepath.Join(filepath.Dir(b.param), "systemd", "reboot-param")
	if err := b.tb.Try("B"); err != nil {
		t.Fatalf("Try without /run/systemd: %v", err)
	}
	if got, _ := os.ReadFile(b.tb.rebootParam); string(got) != TrybootRebootArg {
		t.Errorf("reboot-param = %q, want %q", got, TrybootRebootArg)
	}
}
