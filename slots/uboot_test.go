package slots

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// memFS is an in-memory envFS whose writes stop after budget bytes, as a
// power cut would: an in-place write keeps the bytes written so far, a
// replace leaves a partial temporary file and never renames it.
type memFS struct {
	files  map[string][]byte
	budget int // bytes left before the cut; <0 = unlimited
	used   int // bytes written
}

var errPowerCut = errors.New("power cut")

func newMemFS() *memFS { return &memFS{files: map[string][]byte{}, budget: -1} }

func (m *memFS) clone() *memFS {
	c := newMemFS()
	for k, v := range m.files {
		c.files[k] = slices.Clone(v)
	}
	return c
}

// take returns how many of n bytes may still be written.
func (m *memFS) take(n int) int {
	if m.budget < 0 {
		m.used += n
		return n
	}
	k := min(n, m.budget)
	m.budget -= k
	m.used += k
	return k
}

func (m *memFS) ReadAt(path string, off, n int64) ([]byte, error) {
	b, ok := m.files[path]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrEnvDevice, path)
	}
	if off+n > int64(len(b)) {
		return nil, fmt.Errorf("%w: %s too short", ErrEnvSize, path)
	}
	return slices.Clone(b[off : off+n]), nil
}

func (m *memFS) WriteAt(path string, off int64, p []byte) error {
	b, ok := m.files[path]
	if !ok || off+int64(len(p)) > int64(len(b)) {
		return fmt.Errorf("write %s: out of range", path)
	}
	k := m.take(len(p))
	copy(b[off:], p[:k])
	if k < len(p) {
		return errPowerCut
	}
	return nil
}

func (m *memFS) Replace(path string, p []byte) error {
	k := m.take(len(p))
	m.files[path+".tmp"] = slices.Clone(p[:k])
	if k < len(p) {
		return errPowerCut
	}
	m.files[path] = m.files[path+".tmp"]
	delete(m.files, path+".tmp")
	return nil
}

func (m *memFS) Stat(path string) (int64, bool, error) {
	b, ok := m.files[path]
	if !ok {
		return 0, false, os.ErrNotExist
	}
	return int64(len(b)), true, nil
}

// layouts builds an in-memory store of each layout holding env.
var layouts = []struct {
	name  string
	build func(env Env, envSize int64) (*EnvStore, *memFS)
}{
	{"single", func(env Env, envSize int64) (*EnvStore, *memFS) {
		m := newMemFS()
		m.files["/env"], _ = EncodeEnv(env, int(envSize), false, 0)
		return &EnvStore{Copies: []EnvCopy{{Device: "/env", Size: envSize}}, fs: m}, m
	}},
	{"redundant", func(env Env, envSize int64) (*EnvStore, *memFS) {
		m := newMemFS()
		a, _ := EncodeEnv(env, int(envSize), true, 6)
		m.files["/dev/mmcblk0"] = append(make([]byte, envSize), a...) // copy 0 blank, copy 1 live
		return &EnvStore{Copies: []EnvCopy{{Device: "/dev/mmcblk0", Size: envSize}, {Device: "/dev/mmcblk0", Offset: envSize, Size: envSize}}, fs: m}, m
	}},
	{"mirror", func(env Env, envSize int64) (*EnvStore, *memFS) {
		m := newMemFS()
		m.files["/boot/uboot.env"], _ = EncodeEnv(env, int(envSize), false, 0)
		m.files["/boot/uboot-redund.env"], _ = EncodeEnv(env, int(envSize), false, 0)
		return &EnvStore{Copies: []EnvCopy{{Device: "/boot/uboot.env", Size: envSize}}, Mirror: "/boot/uboot-redund.env", fs: m}, m
	}},
}

func raucEnv(order, a, b string) Env {
	e := Env{"bootcmd": "run distro_bootcmd"}
	if order != "-" {
		e["BOOT_ORDER"] = order
	}
	if a != "-" {
		e["BOOT_A_LEFT"] = a
	}
	if b != "-" {
		e["BOOT_B_LEFT"] = b
	}
	return e
}

func testUBoot(s *EnvStore, scheme string) *UBoot {
	return &UBoot{Store: s, scheme: scheme, tries: 3, parts: map[string]int{"A": 2, "B": 3}, names: []string{"A", "B"}}
}

func apply(u *UBoot, op, slot string) error {
	switch op {
	case "try":
		return u.Try(slot)
	case "commit":
		return u.Commit(slot)
	case "bad":
		return u.MarkBad(slot)
	}
	panic(op)
}

func TestRAUCTransitions(t *testing.T) {
	tests := []struct {
		name     string
		start    Env
		op, slot string
		want     Env // nil: unchanged
		err      error
	}{
		{"try B from A", raucEnv("A B", "3", "3"), "try", "B", raucEnv("B A", "3", "1"), nil},
		{"try B after B marked bad", raucEnv("A", "2", "0"), "try", "B", raucEnv("B A", "2", "1"), nil},
		{"try B, no vars yet", raucEnv("-", "-", "-"), "try", "B", nil, ErrNoFallback},
		{"try B, A exhausted", raucEnv("A B", "0", "3"), "try", "B", nil, ErrNoFallback},
		{"try A from B", raucEnv("B A", "3", "2"), "try", "A", raucEnv("A B", "1", "2"), nil},
		{"commit B after trial", raucEnv("B A", "3", "0"), "commit", "B", raucEnv("B A", "3", "3"), nil},
		{"commit B from A", raucEnv("A B", "3", "3"), "commit", "B", raucEnv("B A", "3", "3"), nil},
		{"commit A refills", raucEnv("A B", "1", "3"), "commit", "A", raucEnv("A B", "3", "3"), nil},
		{"commit A keeps B out", raucEnv("A", "2", "0"), "commit", "A", raucEnv("A", "3", "0"), nil},
		{"commit with no vars", raucEnv("-", "-", "-"), "commit", "A", raucEnv("A", "3", "0"), nil},
		{"mark B bad after trial", raucEnv("B A", "3", "0"), "bad", "B", raucEnv("A", "3", "0"), nil},
		{"mark B bad pending", raucEnv("B A", "3", "1"), "bad", "B", raucEnv("A", "3", "0"), nil},
		{"mark A bad", raucEnv("A B", "3", "3"), "bad", "A", raucEnv("B", "0", "3"), nil},
		{"mark last good bad", raucEnv("A", "3", "0"), "bad", "A", nil, ErrNoFallback},
		{"unknown names dropped", raucEnv("C A B", "3", "3"), "try", "B", raucEnv("B A", "3", "1"), nil},
		{"bad slot name", raucEnv("A B", "3", "3"), "try", "C", nil, ErrNoSlot},
	}
	for _, l := range layouts {
		for _, tt := range tests {
			t.Run(l.name+"/"+tt.name, func(t *testing.T) {
				s, _ := l.build(tt.start, 0x4000)
				u := testUBoot(s, SchemeRAUC)
				err := apply(u, tt.op, tt.slot)
				if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
					t.Fatalf("%s(%s) err = %v, want %v", tt.op, tt.slot, err, tt.err)
				}
				want := tt.want
				if want == nil {
					want = tt.start
				}
				got, err := s.Read()
				if err != nil {
					t.Fatal(err)
				}
				if g, w := strings.Join(envLines(got), "|"), strings.Join(envLines(want), "|"); g != w {
					t.Errorf("env = %s, want %s", g, w)
				}
			})
		}
	}
}

func TestRAUCState(t *testing.T) {
	tests := []struct {
		name   string
		env    Env
		booted string
		want   BootState
	}{
		{"committed A", raucEnv("A B", "3", "3"), "A", BootState{Primary: "A"}},
		{"A booted twice without commit: its last try is next", raucEnv("A B", "1", "3"), "A", BootState{Primary: "B", Pending: "A"}},
		{"A booted once", raucEnv("A B", "2", "3"), "A", BootState{Primary: "A"}},
		{"pending B", raucEnv("B A", "3", "1"), "A", BootState{Primary: "A", Pending: "B"}},
		{"trial of B running", raucEnv("B A", "3", "0"), "B", BootState{Primary: "A", Trial: "B"}},
		{"trial of B failed, back on A", raucEnv("B A", "2", "0"), "A", BootState{Primary: "A"}},
		{"trial state, booted unknown", raucEnv("B A", "3", "0"), "", BootState{Primary: "A"}},
		{"committed B", raucEnv("B A", "3", "3"), "B", BootState{Primary: "B"}},
		{"B bad", raucEnv("A", "3", "0"), "A", BootState{Primary: "A", Bad: []string{"B"}}},
		{"nothing left: script resets", raucEnv("A B", "0", "0"), "A", BootState{Primary: "A"}},
		{"no vars", raucEnv("-", "-", "-"), "", BootState{Bad: []string{"A", "B"}}},
		{"garbage counter", raucEnv("A B", "x", "3"), "", BootState{Primary: "B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := raucState(tt.env, []string{"A", "B"}, tt.booted)
			if got.Primary != tt.want.Primary || got.Pending != tt.want.Pending || got.Trial != tt.want.Trial ||
				strings.Join(got.Bad, ",") != strings.Join(tt.want.Bad, ",") {
				t.Errorf("state = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func menderEnv(part, upgrade, count string) Env {
	e := Env{"bootlimit": "1", "mender_boot_part": part, "mender_boot_part_hex": part, "upgrade_available": upgrade, "bootcount": count}
	return e
}

func TestMenderTransitions(t *testing.T) {
	tests := []struct {
		name     string
		start    Env
		op, slot string
		want     Env
	}{
		{"try B", menderEnv("2", "0", "0"), "try", "B", menderEnv("3", "1", "0")},
		{"commit B after boot", menderEnv("3", "1", "1"), "commit", "B", menderEnv("3", "0", "0")},
		{"mark B bad", menderEnv("3", "1", "1"), "bad", "B", menderEnv("2", "0", "0")},
		{"mark A bad while on B", menderEnv("3", "0", "0"), "bad", "A", menderEnv("3", "0", "0")},
		{"try A from B", menderEnv("3", "0", "0"), "try", "A", menderEnv("2", "1", "0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := layouts[1].build(tt.start, 0x4000)
			u := testUBoot(s, SchemeMender)
			if err := apply(u, tt.op, tt.slot); err != nil {
				t.Fatal(err)
			}
			got, _ := s.Read()
			if g, w := strings.Join(envLines(got), "|"), strings.Join(envLines(tt.want), "|"); g != w {
				t.Errorf("env = %s, want %s", g, w)
			}
		})
	}
	states := []struct {
		env                    Env
		booted                 string
		primary, pending, tria string
	}{
		{menderEnv("2", "0", "0"), "A", "A", "", ""},
		{menderEnv("3", "1", "0"), "A", "A", "B", ""},
		{menderEnv("3", "1", "1"), "B", "A", "", "B"},
		{menderEnv("3", "1", "1"), "", "A", "", "B"},
		{menderEnv("3", "0", "0"), "B", "B", "", ""},
		// bootcount kept climbing (upgrade_available read too late by
		// U-Boot): still an uncommitted trial, never a commit.
		{menderEnv("3", "1", "5"), "B", "A", "", "B"},
		// Back on A while upgrade_available is still 1: no trial running.
		{menderEnv("3", "1", "2"), "A", "A", "", ""},
	}
	for i, tt := range states {
		dir := t.TempDir()
		cmd := filepath.Join(dir, "cmdline")
		os.WriteFile(cmd, []byte("autopatcher.slot="+tt.booted), 0o644)
		s, _ := layouts[0].build(tt.env, 0x4000)
		u := testUBoot(s, SchemeMender)
		u.cfg = &Config{
			Classes: map[string]*Class{"rootfs": {A: &Slot{BootName: "A"}, B: &Slot{BootName: "B"}}},
			Paths:   Paths{Cmdline: cmd},
		}
		got, err := u.State()
		if err != nil || got.Primary != tt.primary || got.Pending != tt.pending || got.Trial != tt.tria {
			t.Errorf("state %d = %+v, %v; want primary %q pending %q trial %q", i, got, err, tt.primary, tt.pending, tt.tria)
		}
	}
}

// TestTornWrites cuts every bootloader-state write after every possible
// number of bytes: what is left must read as the old or the new state,
// never garbage and never without a slot to boot. The env is 0x400 bytes
// to keep the test quick (the layout code does not depend on the size),
// plus the real 0x4000 of the armv7 mirror files for one operation.
func TestTornWrites(t *testing.T) {
	ops := []struct {
		scheme   string
		start    Env
		op, slot string
		size     int64
		layout   string // "" = every layout
	}{
		{SchemeRAUC, raucEnv("A B", "3", "3"), "try", "B", 0x400, ""},
		{SchemeRAUC, raucEnv("B A", "3", "0"), "commit", "B", 0x400, ""},
		{SchemeRAUC, raucEnv("B A", "3", "0"), "bad", "B", 0x400, ""},
		{SchemeMender, menderEnv("2", "0", "0"), "try", "B", 0x400, ""},
		{SchemeRAUC, raucEnv("A B", "3", "3"), "try", "B", 0x4000, "mirror"},
	}
	for _, l := range layouts {
		for _, o := range ops {
			if o.layout != "" && o.layout != l.name {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s/%s%s/%#x", l.name, o.scheme, o.op, o.slot, o.size), func(t *testing.T) {
				s, m := l.build(o.start, o.size)
				u := testUBoot(s, o.scheme)
				oldEnv, _ := s.Read()
				// A full write, to learn the new state and its length.
				full := m.clone()
				s.fs = full
				if err := apply(u, o.op, o.slot); err != nil {
					t.Fatal(err)
				}
				newEnv, _ := s.Read()
				total := full.used
				if total == 0 {
					t.Fatal("operation wrote nothing")
				}
				old, neu := strings.Join(envLines(oldEnv), "|"), strings.Join(envLines(newEnv), "|")
				for cut := 0; cut < total; cut++ {
					fs := m.clone()
					fs.budget = cut
					s.fs = fs
					if err := apply(u, o.op, o.slot); !errors.Is(err, errPowerCut) {
						t.Fatalf("cut %d: err = %v, want the power cut", cut, err)
					}
					fs.budget = -1
					got, err := s.Read()
					if err != nil {
						t.Fatalf("cut %d of %d: Read: %v", cut, total, err)
					}
					g := strings.Join(envLines(got), "|")
					if g != old && g != neu {
						t.Fatalf("cut %d of %d: env %s is neither old %s nor new %s", cut, total, g, old, neu)
					}
					st, err := u.State()
					if err != nil || st.Primary == "" {
						t.Fatalf("cut %d: state %+v, %v: no bootable slot", cut, st, err)
					}
					// A later full write still works from the torn state.
					if err := apply(u, o.op, o.slot); err != nil {
						t.Fatalf("cut %d: retry: %v", cut, err)
					}
					if got, _ := s.Read(); strings.Join(envLines(got), "|") != neu {
						t.Fatalf("cut %d: retry gave %v", cut, envLines(got))
					}
				}
			})
		}
	}
}
