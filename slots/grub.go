package slots

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// DefaultGrubEnvPath is where GRUB's load_env looks by default.
const DefaultGrubEnvPath = "/boot/grub/grubenv"

// GrubTrialVar marks the slot of the current Try in the grubenv. GRUB never
// reads it; it tells a trial boot from a routine one.
const GrubTrialVar = "AUTOPATCHER_TRIAL"

// Grub keeps boot selection in the GRUB environment block with RAUC's
// variables, read by targets/x86/grub.cfg:
//
//	ORDER="A B"   slots in boot order
//	A_OK=1        slot A may boot (0: bad)
//	A_TRY=0       slot A has not been booted since it was last marked good
//
// On every boot the script boots the first slot in ORDER with x_OK=1 and
// x_TRY=0, setting x_TRY=1 first (save_env). If there is none, every slot
// with x_OK=1 except the AUTOPATCHER_TRIAL slot gets x_TRY=0 back and the
// script chooses again, then once more with the trial slot reset too; if no
// slot is OK at all it boots A. So a slot not marked good again after it
// booted is skipped by the next boot: the running system must Commit the
// booted slot on every healthy boot (RAUC's mark-good). Sparing the trial
// slot in the first reset is our one change to RAUC's script: a trial gets
// exactly one boot even when the fallback boot is not confirmed before the
// next power cycle.
//
//   - Try(X): X first in ORDER, X_OK=1, X_TRY=0; every other OK slot gets
//     TRY=0 (the fallback is fresh, so X gets exactly one boot);
//     AUTOPATCHER_TRIAL=X.
//   - Commit(X): X first in ORDER, X_OK=1, X_TRY=0; AUTOPATCHER_TRIAL unset.
//     Commit also rewrites a grubenv that does not parse (keeping nothing)
//     with X as the only good slot. A missing grubenv is an error for every
//     call (the partition holding it is probably not mounted; create it
//     with grub-editenv when building the image).
//   - MarkBad(X): X_OK=0, X_TRY=0 (ORDER kept, as RAUC does);
//     AUTOPATCHER_TRIAL unset if it named X.
//   - State: Pending = the AUTOPATCHER_TRIAL slot while its TRY is 0;
//     Trial = that slot once its TRY is 1 while every other OK slot still
//     has TRY=0 (nothing else booted since: a fallback boot sets the
//     fallback's TRY); Primary = the first OK slot in ORDER other than the
//     AUTOPATCHER_TRIAL slot (the committed slot, whatever its TRY: a
//     routine boot sets it until the running system commits again);
//     Tries = 1 for a slot the script may boot next (OK=1, TRY=0), else 0;
//     Bad = slots with OK=0.
//
// Other variables (saved_entry, next_entry, ...) are kept in place. Missing
// boot variables read as the script's defaults (ORDER="A B", x_OK=0,
// x_TRY=0); values the script cannot use (OK/TRY other than 0 or 1, an
// unknown slot in ORDER) are an error wrapping ErrGrubEnv and nothing is
// written, except by Commit's recovery. Every write replaces the file
// atomically (temporary file, fsync, rename, fsync directory), unlike GRUB's
// own in-place save_env.
type Grub struct {
	path  string
	slots []string

	wrap func(io.Writer) io.Writer // test hook on the temporary file's writer
}

var _ Bootloader = (*Grub)(nil)

func init() { Register(BootGrub, openGrub) }

func openGrub(c *Config) (Bootloader, error) {
	gc := GrubConfig{}
	if c.Bootloader.Grub != nil {
		gc = *c.Bootloader.Grub
	}
	g, err := NewGrub(gc)
	if err != nil {
		return nil, err
	}
	if names := c.BootNames(); len(names) > 0 {
		g.slots = names
	}
	for _, n := range g.slots {
		if strings.ContainsAny(n, " \t\n=\\#") {
			return nil, fieldErr("slots", "boot name %q cannot be a GRUB slot", n)
		}
	}
	return g, nil
}

// NewGrub builds the GRUB backend for slots A and B. Default EnvPath:
// /boot/grub/grubenv.
func NewGrub(c GrubConfig) (*Grub, error) {
	g := &Grub{path: c.EnvPath, slots: []string{"A", "B"}}
	if g.path == "" {
		g.path = DefaultGrubEnvPath
	}
	return g, nil
}

// grubBoot is the boot-selection part of a grubenv.
type grubBoot struct {
	order []string
	ok    map[string]bool
	try   map[string]bool
	trial string
}

// Env reads and parses the grubenv.
func (g *Grub) Env() (*GrubEnv, error) {
	f, err := os.Open(g.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read grubenv: %w (is its partition mounted?)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("read grubenv: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, GrubEnvSize+1))
	if err != nil {
		return nil, fmt.Errorf("read grubenv: %w", err)
	}
	e, err := ParseGrubEnv(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", g.path, err)
	}
	return e, nil
}

func (g *Grub) boot(e *GrubEnv) (grubBoot, error) {
	gb := grubBoot{ok: map[string]bool{}, try: map[string]bool{}}
	order, ok := e.Get("ORDER")
	if !ok {
		order = strings.Join(g.slots, " ")
	}
	for _, s := range strings.Fields(order) {
		if !slices.Contains(g.slots, s) || slices.Contains(gb.order, s) {
			return gb, fmt.Errorf("%w: ORDER=%q: %q is not a slot or repeated", ErrGrubEnv, order, s)
		}
		gb.order = append(gb.order, s)
	}
	for _, s := range g.slots {
		for _, v := range []struct {
			suffix string
			m      map[string]bool
		}{{"_OK", gb.ok}, {"_TRY", gb.try}} {
			val, ok := e.Get(s + v.suffix)
			switch {
			case !ok || val == "0":
			case val == "1":
				v.m[s] = true
			default:
				return gb, fmt.Errorf("%w: %s%s=%q is not 0 or 1", ErrGrubEnv, s, v.suffix, val)
			}
		}
	}
	gb.trial, _ = e.Get(GrubTrialVar)
	if gb.trial != "" && !slices.Contains(g.slots, gb.trial) {
		return gb, fmt.Errorf("%w: %s=%q is not a slot", ErrGrubEnv, GrubTrialVar, gb.trial)
	}
	return gb, nil
}

func (g *Grub) load() (*GrubEnv, grubBoot, error) {
	e, err := g.Env()
	if err != nil {
		return nil, grubBoot{}, err
	}
	gb, err := g.boot(e)
	if err != nil {
		return nil, gb, fmt.Errorf("read %s: %w", g.path, err)
	}
	return e, gb, nil
}

func (g *Grub) store(e *GrubEnv, gb grubBoot) error {
	set := func(n, v string) error { return e.Set(n, v) }
	bit := map[bool]string{false: "0", true: "1"}
	if err := set("ORDER", strings.Join(gb.order, " ")); err != nil {
		return err
	}
	for _, s := range g.slots {
		if err := set(s+"_OK", bit[gb.ok[s]]); err != nil {
			return err
		}
		if err := set(s+"_TRY", bit[gb.try[s]]); err != nil {
			return err
		}
	}
	if gb.trial == "" {
		e.Unset(GrubTrialVar)
	} else if err := set(GrubTrialVar, gb.trial); err != nil {
		return err
	}
	b, err := e.Bytes()
	if err != nil {
		return err
	}
	if cur, err := os.ReadFile(g.path); err == nil && string(cur) == string(b) {
		return nil
	}
	return ReplaceFile(g.path, b, 0o644, g.wrap)
}

func (g *Grub) known(slot string) error {
	if !slices.Contains(g.slots, slot) {
		return fmt.Errorf("%w: %q", ErrNoSlot, slot)
	}
	return nil
}

// State reports the boot selection; see Grub.
func (g *Grub) State() (BootState, error) {
	_, gb, err := g.load()
	if err != nil {
		return BootState{}, err
	}
	bs := BootState{Tries: map[string]int{}}
	t := gb.trial
	if t != "" && gb.ok[t] {
		if !gb.try[t] {
			bs.Pending = t
		} else {
			fresh := true
			for _, s := range g.slots {
				if s != t && gb.ok[s] && gb.try[s] {
					fresh = false
				}
			}
			if fresh {
				bs.Trial = t
			}
		}
	}
	for _, s := range gb.order {
		if bs.Primary == "" && s != t && gb.ok[s] {
			bs.Primary = s
		}
	}
	for _, s := range gb.order {
		if bs.Primary == "" && gb.ok[s] {
			bs.Primary = s
		}
	}
	if bs.Primary == "" && len(gb.order) > 0 {
		bs.Primary = gb.order[0]
	}
	for _, s := range g.slots {
		if gb.ok[s] && !gb.try[s] {
			bs.Tries[s] = 1
		} else {
			bs.Tries[s] = 0
		}
		if !gb.ok[s] {
			bs.Bad = append(bs.Bad, s)
		}
	}
	return bs, nil
}

// Try gives slot exactly one boot ahead of the others.
func (g *Grub) Try(slot string) error {
	if err := g.known(slot); err != nil {
		return fmt.Errorf("try slot: %w", err)
	}
	e, gb, err := g.load()
	if err != nil {
		return fmt.Errorf("try slot %s: %w", slot, err)
	}
	gb.order = toFront(gb.order, slot)
	for _, s := range g.slots {
		if gb.ok[s] {
			gb.try[s] = false
		}
	}
	gb.ok[slot], gb.try[slot] = true, false
	gb.trial = slot
	if err := g.store(e, gb); err != nil {
		return fmt.Errorf("try slot %s: %w", slot, err)
	}
	return nil
}

// Commit makes slot the first good slot.
func (g *Grub) Commit(slot string) error {
	if err := g.known(slot); err != nil {
		return fmt.Errorf("commit slot: %w", err)
	}
	e, gb, err := g.load()
	switch {
	case err == nil:
	case errors.Is(err, ErrGrubEnv):
		// Garbage: the slot committing now is the one known to boot.
		e = NewGrubEnv()
		gb = grubBoot{order: slices.Clone(g.slots), ok: map[string]bool{}, try: map[string]bool{}}
	default:
		return fmt.Errorf("commit slot %s: %w", slot, err)
	}
	gb.order = toFront(gb.order, slot)
	gb.ok[slot], gb.try[slot] = true, false
	gb.trial = ""
	if err := g.store(e, gb); err != nil {
		return fmt.Errorf("commit slot %s: %w", slot, err)
	}
	return nil
}

// MarkBad keeps GRUB from booting slot.
func (g *Grub) MarkBad(slot string) error {
	if err := g.known(slot); err != nil {
		return fmt.Errorf("mark slot bad: %w", err)
	}
	e, gb, err := g.load()
	if err != nil {
		return fmt.Errorf("mark slot %s bad: %w", slot, err)
	}
	gb.ok[slot], gb.try[slot] = false, false
	if gb.trial == slot {
		gb.trial = ""
	}
	if err := g.store(e, gb); err != nil {
		return fmt.Errorf("mark slot %s bad: %w", slot, err)
	}
	return nil
}
