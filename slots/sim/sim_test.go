package sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autopatcher/autopatcher/slots"
)

// snap renders everything observable in one line.
func snap(t *testing.T, b *Bootloader) string {
	t.Helper()
	v, err := b.Vars()
	if err != nil {
		t.Fatalf("Vars: %v", err)
	}
	bs, err := b.State()
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	return fmt.Sprintf("order=%q A=%s B=%s primary=%s pending=%s trial=%s bad=%v booted=%s",
		v["BOOT_ORDER"], v["BOOT_A_LEFT"], v["BOOT_B_LEFT"], bs.Primary, bs.Pending, bs.Trial, bs.Bad, b.Booted())
}

// step is one operation on the simulator, written as "try B", "commit A",
// "bad B", "reboot", "hang B", "crash A", "ok B", "reboot-hang".
func step(b *Bootloader, op string) error {
	verb, slot, _ := strings.Cut(op, " ")
	switch verb {
	case "try":
		return b.Try(slot)
	case "commit":
		return b.Commit(slot)
	case "bad":
		return b.MarkBad(slot)
	case "hang":
		return b.SetBehaviour(slot, Hang)
	case "crash":
		return b.SetBehaviour(slot, Crash)
	case "ok":
		return b.SetBehaviour(slot, OK)
	case "reboot":
		_, err := b.Reboot()
		return err
	case "reboot-hang":
		_, err := b.RebootWith(Hang)
		return err
	}
	return fmt.Errorf("unknown op %q", op)
}

func TestTransitions(t *testing.T) {
	tests := []struct {
		name string
		ops  []string
		want string
	}{
		{"fresh", nil,
			`order="A B" A=3 B=3 primary=A pending= trial= bad=[] booted=A`},
		{"try", []string{"try B"},
			`order="B A" A=3 B=1 primary=A pending=B trial= bad=[] booted=A`},
		{"trial boot", []string{"try B", "reboot"},
			`order="B A" A=3 B=0 primary=A pending= trial=B bad=[] booted=B`},
		{"trial committed", []string{"try B", "reboot", "commit B"},
			`order="B A" A=3 B=3 primary=B pending= trial= bad=[] booted=B`},
		{"committed slot boots again", []string{"try B", "reboot", "commit B", "reboot"},
			`order="B A" A=3 B=2 primary=B pending= trial= bad=[] booted=B`},
		{"trial not committed falls back", []string{"try B", "reboot", "reboot"},
			`order="B A" A=2 B=0 primary=A pending= trial= bad=[] booted=A`},
		{"trial hangs", []string{"hang B", "try B", "reboot"},
			`order="B A" A=2 B=0 primary=A pending= trial= bad=[] booted=A`},
		{"trial crashes then marked bad", []string{"crash B", "try B", "reboot", "bad B"},
			`order="A" A=2 B=0 primary=A pending= trial= bad=[B] booted=A`},
		{"trial marked bad while running", []string{"try B", "reboot", "bad B"},
			`order="A" A=3 B=0 primary=A pending= trial= bad=[B] booted=B`},
		{"bad slot leaves the order and stays out", []string{"try B", "reboot", "bad B", "reboot", "reboot", "reboot", "reboot"},
			`order="A" A=2 B=3 primary=A pending= trial= bad=[B] booted=A`},
		{"counting down", []string{"reboot", "reboot"},
			`order="A B" A=1 B=3 primary=A pending= trial= bad=[] booted=A`},
		{"counter exhausted moves to next", []string{"reboot", "reboot", "reboot", "reboot"},
			`order="A B" A=0 B=2 primary=B pending= trial= bad=[] booted=B`},
		{"all exhausted resets", []string{"reboot", "reboot", "reboot", "reboot", "reboot", "reboot", "reboot"},
			`order="A B" A=2 B=3 primary=A pending= trial= bad=[] booted=A`},
		{"reset boots first in order", []string{"try B", "reboot", "commit B", "bad A", "reboot", "reboot", "reboot", "reboot"},
			`order="B" A=3 B=2 primary=B pending= trial= bad=[A] booted=B`},
		{"empty order restores default", []string{"bad A", "bad B", "reboot"},
			`order="A B" A=2 B=3 primary=A pending= trial= bad=[] booted=A`},
		{"empty order keeps counters", []string{"bad A", "reboot", "reboot", "reboot", "reboot", "bad B", "reboot"},
			`order="A B" A=2 B=0 primary=A pending= trial= bad=[] booted=A`},
		{"try booted slot again", []string{"try A"},
			`order="A B" A=1 B=3 primary=B pending=A trial= bad=[] booted=A`},
		{"commit other slot without trial", []string{"commit B"},
			`order="B A" A=3 B=3 primary=B pending= trial= bad=[] booted=A`},
		{"retry after failed trial", []string{"try B", "reboot", "reboot", "bad B", "try B", "reboot"},
			`order="B A" A=2 B=0 primary=A pending= trial=B bad=[] booted=B`},
		{"reboot with hang on trial", []string{"try B", "reboot-hang"},
			`order="B A" A=2 B=0 primary=A pending= trial= bad=[] booted=A`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range tt.ops {
				if err := step(b, op); err != nil {
					t.Fatalf("%s: %v", op, err)
				}
			}
			if got := snap(t, b); got != tt.want {
				t.Errorf("after %q:\n got %s\nwant %s", tt.ops, got, tt.want)
			}
		})
	}
}

func TestBootLog(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"hang B", "try B"} {
		if err := step(b, op); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.Reboot()
	if err != nil || got != "A" {
		t.Fatalf("Reboot() = %q, %v; want A", got, err)
	}
	boots, err := b.Boots()
	if err != nil {
		t.Fatal(err)
	}
	want := []Boot{
		{N: 1, Slot: "B", Behaviour: Hang, Trial: true},
		{N: 2, Slot: "A", Behaviour: OK},
	}
	if fmt.Sprint(boots) != fmt.Sprint(want) {
		t.Errorf("Boots() = %v, want %v", boots, want)
	}
	if c := b.Cmdline(); c != "console=ttyAMA0,115200 panic=5 autopatcher.slot=A rauc.slot=A" {
		t.Errorf("Cmdline() = %q", c)
	}
}

func TestEverySlotFails(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b.SetBehaviour("A", Crash)
	b.SetBehaviour("B", Hang)
	if _, err := b.Reboot(); !errors.Is(err, ErrNoBoot) {
		t.Fatalf("Reboot() error = %v, want ErrNoBoot", err)
	}
	// The state is still usable and a fixed slot boots.
	if err := b.SetBehaviour("B", OK); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Reboot(); err != nil || got != "B" && got != "A" {
		t.Fatalf("Reboot() = %q, %v", got, err)
	}
	if got := b.Booted(); got != "B" {
		t.Errorf("Booted() = %q, want B (A crashes)", got)
	}
}

func TestPersists(t *testing.T) {
	dir := t.TempDir()
	b, err := New(dir, WithTries(5))
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"hang B", "try B"} {
		if err := step(b, op); err != nil {
			t.Fatal(err)
		}
	}
	b2, err := New(dir, WithTries(2)) // options ignored for an existing state
	if err != nil {
		t.Fatal(err)
	}
	if got, want := snap(t, b2), `order="B A" A=5 B=1 primary=A pending=B trial= bad=[] booted=A`; got != want {
		t.Errorf("reopened:\n got %s\nwant %s", got, want)
	}
	if got, err := b2.Reboot(); err != nil || got != "A" {
		t.Errorf("Reboot() = %q, %v; want A (B hangs, behaviour persisted)", got, err)
	}
}

func TestOptions(t *testing.T) {
	b, err := New(t.TempDir(), WithSlots("X", "Y", "Z"), WithTries(2))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := b.Vars()
	if got := fmt.Sprint(v); got != "map[BOOT_ORDER:X Y Z BOOT_X_LEFT:2 BOOT_Y_LEFT:2 BOOT_Z_LEFT:2]" {
		t.Errorf("Vars() = %s", got)
	}
	for _, opts := range [][]Option{
		{WithSlots()}, {WithSlots("A", "A")}, {WithSlots("")}, {WithTries(1)}, {WithTries(10)},
	} {
		if _, err := New(t.TempDir(), opts...); !errors.Is(err, ErrOptions) {
			t.Errorf("New with bad options: error = %v, want ErrOptions", err)
		}
	}
}

func TestUnknownSlot(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"try C", "commit C", "bad ", "hang C"} {
		if err := step(b, op); !errors.Is(err, ErrUnknownSlot) {
			t.Errorf("%s: error = %v, want ErrUnknownSlot", op, err)
		}
	}
	if err := b.SetBehaviour("A", Behaviour(42)); !errors.Is(err, ErrOptions) {
		t.Errorf("SetBehaviour(42) error = %v, want ErrOptions", err)
	}
}

func TestCorruptState(t *testing.T) {
	for name, content := range map[string]string{
		"empty":        "",
		"garbage":      "\x00\x01garbage",
		"truncated":    `{"version":1,"slots":["A","B"]`,
		"version":      `{"version":2,"slots":["A"],"fullTries":3,"order":["A"],"tries":{"A":3},"booted":"A"}`,
		"order":        `{"version":1,"slots":["A","B"],"fullTries":3,"order":["A","C"],"tries":{"A":3},"booted":"A"}`,
		"tries":        `{"version":1,"slots":["A","B"],"fullTries":3,"order":["A"],"tries":{"A":7},"booted":"A"}`,
		"booted":       `{"version":1,"slots":["A","B"],"fullTries":3,"order":["A"],"tries":{"A":3},"booted":"Q"}`,
		"behaviour":    `{"version":1,"slots":["A","B"],"fullTries":3,"order":["A"],"tries":{"A":3},"booted":"A","behaviour":{"A":"dance"}}`,
		"no slots":     `{"version":1,"slots":[],"fullTries":3,"order":[],"tries":{},"booted":""}`,
		"double order": `{"version":1,"slots":["A","B"],"fullTries":3,"order":["A","A"],"tries":{"A":3},"booted":"A"}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, stateName)
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := New(dir); !errors.Is(err, ErrCorrupt) {
				t.Errorf("New() error = %v, want ErrCorrupt", err)
			}
			if got, _ := os.ReadFile(path); string(got) != content {
				t.Errorf("corrupt state was rewritten: %q", got)
			}
		})
	}
}

// TestTornWrite cuts the power at every byte of every kind of state write:
// the state read afterwards is always the old one, and it still boots.
func TestTornWrite(t *testing.T) {
	ops := []struct{ setup, op string }{
		{"", "try B"},
		{"try B,reboot", "commit B"},
		{"try B,reboot", "bad B"},
		{"try B", "reboot"},
		{"", "hang A"},
	}
	for _, o := range ops {
		t.Run(o.op, func(t *testing.T) {
			// Size of the new state file for this op.
			ref, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			setup := []string{}
			if o.setup != "" {
				setup = strings.Split(o.setup, ",")
			}
			for _, s := range setup {
				if err := step(ref, s); err != nil {
					t.Fatal(err)
				}
			}
			if err := step(ref, o.op); err != nil {
				t.Fatal(err)
			}
			full, err := os.ReadFile(filepath.Join(ref.Dir(), stateName))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			b, err := New(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range setup {
				if err := step(b, s); err != nil {
					t.Fatal(err)
				}
			}
			old, _ := os.ReadFile(filepath.Join(dir, stateName))
			before := snap(t, b)
			// A torn write leaves the live state as it was, so one board
			// serves every cut.
			for k := 0; k <= len(full); k++ {
				b.TearWrite(1, k)
				if err := step(b, o.op); !errors.Is(err, ErrPowerCut) {
					t.Fatalf("k=%d: %s error = %v, want ErrPowerCut", k, o.op, err)
				}
				if tmp, err := os.ReadFile(filepath.Join(dir, tempName)); err != nil || len(tmp) != k {
					t.Fatalf("k=%d: temp file has %d bytes (%v), want %d", k, len(tmp), err, k)
				}
				if live, _ := os.ReadFile(filepath.Join(dir, stateName)); string(live) != string(old) {
					t.Fatalf("k=%d: live state changed by a torn write", k)
				}
				// Power comes back: the board boots from the old state.
				b2, err := New(dir)
				if err != nil {
					t.Fatalf("k=%d: New after power cut: %v", k, err)
				}
				if tmp, err := os.ReadFile(filepath.Join(dir, tempName)); err != nil || len(tmp) != k {
					t.Errorf("k=%d: New changed the temp file (%d bytes, %v): it may be another process's write under way", k, len(tmp), err)
				}
				if got := snap(t, b2); got != before {
					t.Fatalf("k=%d: state after power cut\n got %s\nwant %s", k, got, before)
				}
			}
			if _, err := b.Reboot(); err != nil {
				t.Fatalf("Reboot after power cuts: %v", err)
			}
		})
	}
}

func TestTearLaterWrite(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b.TearWrite(2, 10)
	if err := b.Try("B"); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if _, err := b.Reboot(); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("second write: error = %v, want ErrPowerCut", err)
	}
	if got, want := snap(t, b), `order="B A" A=3 B=1 primary=A pending=B trial= bad=[] booted=A`; got != want {
		t.Errorf("after cut:\n got %s\nwant %s", got, want)
	}
	// The next power cycle runs the trial as if the cut never happened.
	if got, err := b.Reboot(); err != nil || got != "B" {
		t.Errorf("Reboot() = %q, %v; want B", got, err)
	}
}

func TestRegistered(t *testing.T) {
	dir := t.TempDir()
	cfg, err := slots.ParseConfig([]byte(`
bootloader:
  type: sim
  sim:
    dir: ` + dir + `
slots:
  rootfs:
    a: {device: ` + dir + `/a.img, type: file, size: 1M}
    b: {device: ` + dir + `/b.img, type: file, size: 1M}
`))
	if err != nil {
		t.Fatal(err)
	}
	bl, err := slots.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := bl.Try("B"); err != nil {
		t.Fatal(err)
	}
	bs, err := bl.State()
	if err != nil || bs.Pending != "B" || bs.Primary != "A" {
		t.Errorf("State() = %+v, %v; want pending B, primary A", bs, err)
	}
	cfg.Bootloader.Sim.Dir = ""
	if _, err := slots.Open(cfg); !errors.Is(err, slots.ErrConfig) {
		t.Errorf("Open without dir: error = %v, want ErrConfig", err)
	}
}
