package slots

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// grubBoard is a fake x86 board: a grubenv in a temporary directory and a
// model of targets/x86/grub.cfg that "boots" from it.
type grubBoard struct {
	t      *testing.T
	path   string
	g      *Grub
	booted string
}

const grubInitialBody = grubEnvWarning + "saved_entry=0\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\n"

func newGrubBoard(t *testing.T) *grubBoard {
	t.Helper()
	path := filepath.Join(t.TempDir(), "grubenv")
	if err := os.WriteFile(path, grubBlock(grubInitialBody), 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := NewGrub(GrubConfig{EnvPath: path})
	if err != nil {
		t.Fatal(err)
	}
	b := &grubBoard{t: t, path: path, g: g}
	b.reboot() // the system running at the start booted through the script
	if err := g.Commit(b.booted); err != nil {
		t.Fatal(err)
	}
	return b
}

// env reads and parses the board's grubenv.
func (b *grubBoard) env() *GrubEnv {
	b.t.Helper()
	raw, err := os.ReadFile(b.path)
	if err != nil {
		b.t.Fatal(err)
	}
	e, err := ParseGrubEnv(raw)
	if err != nil {
		b.t.Fatalf("GRUB cannot read grubenv: %v", err)
	}
	return e
}

// reboot runs the grub.cfg selection on the grubenv, as GRUB would.
func (b *grubBoard) reboot() {
	b.t.Helper()
	e := b.env()
	get := func(n, def string) string {
		if v, ok := e.Get(n); ok {
			return v
		}
		return def
	}
	vars := map[string]string{}
	for _, n := range []string{"A_OK", "A_TRY", "B_OK", "B_TRY"} {
		vars[n] = get(n, "0")
	}
	trial := get(GrubTrialVar, "")
	slot := ""
	for pass := 1; pass <= 3 && slot == ""; pass++ {
		for _, s := range strings.Fields(get("ORDER", "A B")) {
			if slot == "" && (s == "A" || s == "B") && vars[s+"_OK"] == "1" && vars[s+"_TRY"] == "0" {
				slot = s
				vars[s+"_TRY"] = "1"
			}
		}
		if slot == "" {
			for _, s := range []string{"A", "B"} {
				if vars[s+"_OK"] == "1" && (pass != 1 || trial != s) {
					vars[s+"_TRY"] = "0"
				}
			}
		}
	}
	if slot == "" {
		slot = "A"
	}
	// save_env A_TRY B_TRY
	e.Set("A_TRY", vars["A_TRY"])
	e.Set("B_TRY", vars["B_TRY"])
	out, err := e.Bytes()
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(b.path, out, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.booted = slot
}

func (b *grubBoard) step(op string) error {
	verb, slot, _ := strings.Cut(op, " ")
	switch verb {
	case "try":
		return b.g.Try(slot)
	case "commit":
		return b.g.Commit(slot)
	case "commit-booted":
		return b.g.Commit(b.booted)
	case "bad":
		return b.g.MarkBad(slot)
	case "reboot":
		b.reboot()
		return nil
	}
	return fmt.Errorf("unknown op %q", op)
}

func (b *grubBoard) snap() string {
	b.t.Helper()
	e := b.env()
	var vars []string
	for _, n := range e.Names() {
		v, _ := e.Get(n)
		vars = append(vars, n+"="+v)
	}
	bs, err := b.g.State()
	if err != nil {
		b.t.Fatalf("State: %v", err)
	}
	return fmt.Sprintf("%s | booted=%s primary=%s pending=%s trial=%s tries=%v bad=%v",
		strings.Join(vars, ","), b.booted, bs.Primary, bs.Pending, bs.Trial, bs.Tries, bs.Bad)
}

func TestGrubTransitions(t *testing.T) {
	const vars = "saved_entry=0,ORDER="
	tests := []struct {
		name string
		ops  []string
		want string
	}{
		{"fresh", nil,
			vars + "A B,A_OK=1,A_TRY=0,B_OK=1,B_TRY=0 | booted=A primary=A pending= trial= tries=map[A:1 B:1] bad=[]"},
		{"routine boot needs a commit", []string{"reboot"},
			vars + "A B,A_OK=1,A_TRY=1,B_OK=1,B_TRY=0 | booted=A primary=A pending= trial= tries=map[A:0 B:1] bad=[]"},
		{"routine boot committed", []string{"reboot", "commit-booted"},
			vars + "A B,A_OK=1,A_TRY=0,B_OK=1,B_TRY=0 | booted=A primary=A pending= trial= tries=map[A:1 B:1] bad=[]"},
		{"try", []string{"try B"},
			vars + "B A,A_OK=1,A_TRY=0,B_OK=1,B_TRY=0,AUTOPATCHER_TRIAL=B | booted=A primary=A pending=B trial= tries=map[A:1 B:1] bad=[]"},
		{"trial boot", []string{"try B", "reboot"},
			vars + "B A,A_OK=1,A_TRY=0,B_OK=1,B_TRY=1,AUTOPATCHER_TRIAL=B | booted=B primary=A pending= trial=B tries=map[A:1 B:0] bad=[]"},
		{"trial committed", []string{"try B", "reboot", "commit B"},
			vars + "B A,A_OK=1,A_TRY=0,B_OK=1,B_TRY=0 | booted=B primary=B pending= trial= tries=map[A:1 B:1] bad=[]"},
		{"committed slot boots again", []string{"try B", "reboot", "commit B", "reboot"},
			vars + "B A,A_OK=1,A_TRY=0,B_OK=1,B_TRY=1 | booted=B primary=B pending= trial= tries=map[A:1 B:0] bad=[]"},
		{"committed slot not confirmed falls back", []string{"try B", "reboot", "commit B", "reboot", "reboot"},
			vars + "B A,A_OK=1,A_TRY=1,B_OK=1,B_TRY=1 | booted=A primary=B pending= trial= tries=map[A:0 B:0] bad=[]"},
		{"uncommitted trial falls back", []string{"try B", "reboot", "reboot"},
			vars + "B A,A_OK=1,A_TRY=1,B_OK=1,B_TRY=1,AUTOPATCHER_TRIAL=B | booted=A primary=A pending= trial= tries=map[A:0 B:0] bad=[]"},
		{"unconfirmed fallback never retries the trial", []string{"try B", "reboot", "reboot", "reboot", "reboot"},
			vars + "B A,A_OK=1,A_TRY=1,B_OK=1,B_TRY=1,AUTOPATCHER_TRIAL=B | booted=A primary=A pending= trial= tries=map[A:0 B:0] bad=[]"},
		{"trial of the only good slot boots again", []string{"bad A", "try B", "reboot", "reboot"},
			vars + "B A,A_OK=0,A_TRY=0,B_OK=1,B_TRY=1,AUTOPATCHER_TRIAL=B | booted=B primary=B pending= trial=B tries=map[A:0 B:0] bad=[A]"},
		{"failed trial marked bad", []string{"try B", "reboot", "reboot", "bad B", "commit-booted"},
			vars + "A B,A_OK=1,A_TRY=0,B_OK=0,B_TRY=0 | booted=A primary=A pending= trial= tries=map[A:1 B:0] bad=[B]"},
		{"bad slot never boots", []string{"try B", "reboot", "reboot", "bad B", "reboot", "reboot", "reboot"},
			vars + "B A,A_OK=1,A_TRY=1,B_OK=0,B_TRY=0 | booted=A primary=A pending= trial= tries=map[A:0 B:0] bad=[B]"},
		{"trial marked bad while running", []string{"try B", "reboot", "bad B"},
			vars + "B A,A_OK=1,A_TRY=0,B_OK=0,B_TRY=0 | booted=B primary=A pending= trial= tries=map[A:1 B:0] bad=[B]"},
		{"try refreshes the fallback", []string{"reboot", "try B"},
			vars + "B A,A_OK=1,A_TRY=0,B_OK=1,B_TRY=0,AUTOPATCHER_TRIAL=B | booted=A primary=A pending=B trial= tries=map[A:1 B:1] bad=[]"},
		{"retry a bad slot", []string{"bad B", "try B", "reboot"},
			vars + "B A,A_OK=1,A_TRY=0,B_OK=1,B_TRY=1,AUTOPATCHER_TRIAL=B | booted=B primary=A pending= trial=B tries=map[A:1 B:0] bad=[]"},
		{"all bad boots A", []string{"bad A", "bad B", "reboot"},
			vars + "A B,A_OK=0,A_TRY=0,B_OK=0,B_TRY=0 | booted=A primary=A pending= trial= tries=map[A:0 B:0] bad=[A B]"},
		{"nothing left resets tries", []string{"reboot", "reboot", "reboot"},
			vars + "A B,A_OK=1,A_TRY=1,B_OK=1,B_TRY=0 | booted=A primary=A pending= trial= tries=map[A:0 B:1] bad=[]"},
		{"second update back to A", []string{"try B", "reboot", "commit B", "try A", "reboot", "commit A"},
			vars + "A B,A_OK=1,A_TRY=0,B_OK=1,B_TRY=0 | booted=A primary=A pending= trial= tries=map[A:1 B:1] bad=[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newGrubBoard(t)
			steps(t, b, tt.ops...)
			if got := b.snap(); got != tt.want {
				t.Errorf("after %q:\n got %s\nwant %s", tt.ops, got, tt.want)
			}
		})
	}
}

func TestGrubBadEnv(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		want    error
	}{
		{"wrong size", grubBlock("ORDER=A B\n")[:512], ErrGrubEnv},
		{"bad header", append([]byte("# GRUB Environment Blocc\n"), grubBlock("")[25:]...), ErrGrubEnv},
		{"bad OK", grubBlock("A_OK=yes\n"), ErrGrubEnv},
		{"bad ORDER", grubBlock("ORDER=A C\n"), ErrGrubEnv},
		{"bad trial", grubBlock("AUTOPATCHER_TRIAL=Z\n"), ErrGrubEnv},
		{"missing", nil, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newGrubBoard(t)
			if tt.content == nil {
				os.Remove(b.path)
			} else if err := os.WriteFile(b.path, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := b.g.State(); !errors.Is(err, tt.want) {
				t.Errorf("State() error = %v, want %v", err, tt.want)
			}
			for _, op := range []string{"try B", "bad B"} {
				if err := b.step(op); !errors.Is(err, tt.want) {
					t.Errorf("%s: error = %v, want %v", op, err, tt.want)
				}
				got, _ := os.ReadFile(b.path)
				if string(got) != string(tt.content) {
					t.Errorf("%s rewrote a broken grubenv", op)
				}
			}
			if tt.content == nil {
				// Missing: its partition is probably not mounted; nothing is created.
				if err := b.g.Commit("A"); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Commit(A) without grubenv: error = %v, want ErrNotExist", err)
				}
				if _, err := os.Stat(b.path); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Commit created a grubenv in a directory that may be an empty mount point")
				}
				return
			}
			if err := b.g.Commit("A"); err != nil {
				t.Fatalf("Commit(A) recovery: %v", err)
			}
			got, _ := os.ReadFile(b.path)
			if want := grubBlock(grubEnvWarning + "ORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n"); string(got) != string(want) {
				t.Errorf("after recovery grubenv = %q", got)
			}
		})
	}
}

func TestGrubRefusals(t *testing.T) {
	b := newGrubBoard(t)
	for _, op := range []string{"try C", "commit C", "bad C"} {
		if err := b.step(op); !errors.Is(err, ErrNoSlot) {
			t.Errorf("%s: error = %v, want ErrNoSlot", op, err)
		}
	}
	// A block too full for the boot variables is refused, not truncated.
	e := NewGrubEnv()
	e.Set("big", strings.Repeat("x", 960))
	raw, err := e.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(b.path, raw, 0o644)
	if err := b.g.Try("B"); !errors.Is(err, ErrGrubEnvFull) {
		t.Errorf("Try on a full block: error = %v, want ErrGrubEnvFull", err)
	}
	if got, _ := os.ReadFile(b.path); string(got) != string(raw) {
		t.Error("full block was rewritten")
	}
}

// TestGrubTornWrite cuts every grubenv write at every byte: the live file
// keeps the old block and GRUB still boots from it.
func TestGrubTornWrite(t *testing.T) {
	cases := []struct {
		setup []string
		op    string
	}{
		{nil, "try B"},
		{[]string{"try B", "reboot"}, "commit B"},
		{[]string{"try B", "reboot", "reboot"}, "bad B"},
	}
	for _, c := range cases {
		t.Run(c.op, func(t *testing.T) {
			b := newGrubBoard(t)
			steps(t, b, c.setup...)
			old, _ := os.ReadFile(b.path)
			oldState := b.snap()
			// A failed write leaves the live file as it was, so one board
			// serves every cut.
			for k := 0; k < GrubEnvSize; k++ {
				b.g.wrap = func(w io.Writer) io.Writer { return &tbCut{w: w, n: k} }
				if err := b.step(c.op); !errors.Is(err, errTbCut) {
					t.Fatalf("k=%d: %s error = %v, want the cut", k, c.op, err)
				}
				if got, _ := os.ReadFile(b.path); string(got) != string(old) {
					t.Fatalf("k=%d: live grubenv changed", k)
				}
				if tmp, _ := os.ReadFile(b.path + ".tmp"); len(tmp) != k {
					t.Fatalf("k=%d: temporary file has %d bytes", k, len(tmp))
				}
				if got := b.snap(); got != oldState {
					t.Fatalf("k=%d: state after cut\n got %s\nwant %s", k, got, oldState)
				}
			}
			b.g.wrap = nil
			if err := b.step(c.op); err != nil {
				t.Fatalf("%s after the cuts: %v", c.op, err)
			}
			b.reboot()
		})
	}
}

func TestOpenGrub(t *testing.T) {
	b := newGrubBoard(t)
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`
bootloader:
  type: grub
  grub: {env_path: %s}
slots:
  rootfs:
    a: {device: /dev/sda2}
    b: {device: /dev/sda3}
`, b.path)))
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
	if bs, _ := bl.State(); bs.Pending != "B" {
		t.Errorf("Pending = %q, want B", bs.Pending)
	}
	g, _ := NewGrub(GrubConfig{})
	if g.path != DefaultGrubEnvPath {
		t.Errorf("default path %q", g.path)
	}
}
