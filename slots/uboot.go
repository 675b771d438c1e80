package slots

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrNoFallback means an operation would leave no slot to fall back to.
var ErrNoFallback = errors.New("slots: no other bootable slot to fall back to")

// RAUC scheme variables (the armv7 boot script reads exactly these).
const (
	VarBootOrder = "BOOT_ORDER"
)

// leftVar is BOOT_x_LEFT for slot x.
func leftVar(slot string) string { return "BOOT_" + slot + "_LEFT" }

// Mender scheme variables.
const (
	VarMenderPart    = "mender_boot_part"
	VarMenderPartHex = "mender_boot_part_hex"
	VarUpgrade       = "upgrade_available"
	VarBootcount     = "bootcount"
	VarBootlimit     = "bootlimit"
)

// UBoot is the Bootloader on a U-Boot environment.
type UBoot struct {
	Store  *EnvStore
	scheme string
	tries  int
	parts  map[string]int
	names  []string
	cfg    *Config // for Trial: which slot runs now (ReadBooted); nil = unknown
}

var _ Bootloader = (*UBoot)(nil)

func init() {
	Register(BootUBoot, func(c *Config) (Bootloader, error) { return NewUBoot(c) })
}

// NewUBoot builds the U-Boot backend from cfg.Bootloader.UBoot.
func NewUBoot(cfg *Config) (*UBoot, error) {
	u := cfg.Bootloader.UBoot
	if u == nil {
		u = &UBootConfig{}
		cfg.Bootloader.UBoot = u
	}
	if err := u.validate(); err != nil {
		return nil, err
	}
	store, err := OpenEnvStore(u.FwEnvConfig, u.Mirror)
	if err != nil {
		return nil, fmt.Errorf("open U-Boot env: %w", err)
	}
	names := cfg.BootNames()
	if len(names) == 0 {
		names = []string{"A", "B"}
	}
	if u.Scheme == SchemeMender {
		for _, n := range names {
			if u.Parts[n] == 0 {
				return nil, fmt.Errorf("%w: bootloader.uboot.parts.%s: required for scheme mender", ErrConfig, n)
			}
		}
	}
	return &UBoot{Store: store, scheme: u.Scheme, tries: u.Tries, parts: u.Parts, names: names, cfg: cfg}, nil
}

func (u *UBoot) known(slot string) error {
	if !slices.Contains(u.names, slot) {
		return fmt.Errorf("%w: %q (slots are %s)", ErrNoSlot, slot, strings.Join(u.names, ", "))
	}
	return nil
}

// booted is the running slot from the kernel command line (see
// Config.Booted), "" if unknown.
func (u *UBoot) booted() string {
	if u.cfg == nil {
		return ""
	}
	s, err := u.cfg.ReadBooted()
	if err != nil {
		return ""
	}
	return s
}

// State decodes the env; see doc.go for how each field is derived.
func (u *UBoot) State() (BootState, error) {
	env, err := u.Store.Read()
	if err != nil {
		return BootState{}, err
	}
	if u.scheme == SchemeMender {
		return u.menderState(env), nil
	}
	return raucState(env, u.names, u.booted()), nil
}

// Try arranges a single boot of slot.
func (u *UBoot) Try(slot string) error {
	if err := u.known(slot); err != nil {
		return fmt.Errorf("try slot: %w", err)
	}
	err := u.Store.Update(func(env Env) error {
		if u.scheme == SchemeMender {
			return u.menderTry(env, slot)
		}
		return raucTry(env, u.names, slot)
	})
	if err != nil {
		return fmt.Errorf("try slot %s: %w", slot, err)
	}
	return nil
}

// Commit makes slot the primary with full tries.
func (u *UBoot) Commit(slot string) error {
	if err := u.known(slot); err != nil {
		return fmt.Errorf("commit slot: %w", err)
	}
	err := u.Store.Update(func(env Env) error {
		if u.scheme == SchemeMender {
			return u.menderCommit(env, slot)
		}
		return raucCommit(env, u.names, slot, u.tries)
	})
	if err != nil {
		return fmt.Errorf("commit slot %s: %w", slot, err)
	}
	return nil
}

// MarkBad takes slot out of the boot order.
func (u *UBoot) MarkBad(slot string) error {
	if err := u.known(slot); err != nil {
		return fmt.Errorf("mark slot bad: %w", err)
	}
	err := u.Store.Update(func(env Env) error {
		if u.scheme == SchemeMender {
			return u.menderMarkBad(env, slot)
		}
		return raucMarkBad(env, u.names, slot)
	})
	if err != nil {
		return fmt.Errorf("mark slot %s bad: %w", slot, err)
	}
	return nil
}

// raucVars reads BOOT_ORDER (known names, first occurrence) and the tries.
func raucVars(env Env, names []string) ([]string, map[string]int) {
	var order []string
	for _, s := range strings.Fields(env[VarBootOrder]) {
		if slices.Contains(names, s) && !slices.Contains(order, s) {
			order = append(order, s)
		}
	}
	tries := map[string]int{}
	for _, n := range names {
		v, err := strconv.Atoi(strings.TrimSpace(env[leftVar(n)]))
		if err != nil || v < 0 {
			v = 0
		}
		tries[n] = v
	}
	return order, tries
}

// fallbackAfter returns the first slot after position i in order with
// tries left, or "".
func fallbackAfter(order []string, tries map[string]int, i int) string {
	for _, s := range order[i+1:] {
		if tries[s] > 0 {
			return s
		}
	}
	return ""
}

func raucState(env Env, names []string, booted string) BootState {
	order, tries := raucVars(env, names)
	st := BootState{Tries: tries}
	for _, n := range names {
		if !slices.Contains(order, n) {
			st.Bad = append(st.Bad, n)
		}
	}
	first := -1
	for i, s := range order {
		if tries[s] > 0 {
			first = i
			break
		}
	}
	// Trial: the running slot spent its last try and something after it
	// in the order still has tries, so the next boot falls back.
	if i := slices.Index(order, booted); i >= 0 && tries[booted] == 0 {
		if fb := fallbackAfter(order, tries, i); fb != "" {
			st.Trial = booted
		}
	}
	switch {
	case first < 0:
		// Nothing has tries: the script resets all counters and boots
		// the first of the order.
		if len(order) > 0 {
			st.Primary = order[0]
		}
	case tries[order[first]] == 1 && fallbackAfter(order, tries, first) != "":
		// One try, then a fallback: the next boot is a one-shot try.
		st.Pending = order[first]
		st.Primary = fallbackAfter(order, tries, first)
	default:
		st.Primary = order[first]
	}
	if st.Trial != "" && st.Pending == "" {
		st.Primary = fallbackAfter(order, tries, slices.Index(order, st.Trial))
	}
	return st
}

// toFront moves slot to the front of order, keeping the others' order.
func toFront(order []string, slot string) []string {
	out := []string{slot}
	for _, s := range order {
		if s != slot {
			out = append(out, s)
		}
	}
	return out
}

func setOrder(env Env, order []string, tries map[string]int) {
	env[VarBootOrder] = strings.Join(order, " ")
	for s, n := range tries {
		env[leftVar(s)] = strconv.Itoa(n)
	}
}

func raucTry(env Env, names []string, slot string) error {
	order, tries := raucVars(env, names)
	order = toFront(order, slot)
	if fallbackAfter(order, tries, 0) == "" {
		return fmt.Errorf("%w: a failed try of %s would leave nothing to boot", ErrNoFallback, slot)
	}
	tries[slot] = 1
	setOrder(env, order, tries)
	return nil
}

func raucCommit(env Env, names []string, slot string, full int) error {
	order, tries := raucVars(env, names)
	tries[slot] = full
	setOrder(env, toFront(order, slot), tries)
	return nil
}

func raucMarkBad(env Env, names []string, slot string) error {
	order, tries := raucVars(env, names)
	order = slices.DeleteFunc(order, func(s string) bool { return s == slot })
	tries[slot] = 0
	if fallbackAfter(append([]string{""}, order...), tries, 0) == "" {
		return fmt.Errorf("%w: %s is the last slot with tries left", ErrNoFallback, slot)
	}
	setOrder(env, order, tries)
	return nil
}

// menderName maps mender_boot_part back to a boot name, "" if unknown.
func (u *UBoot) menderName(env Env) string {
	p, err := strconv.Atoi(strings.TrimSpace(env[VarMenderPart]))
	if err != nil {
		return ""
	}
	for _, n := range u.names {
		if u.parts[n] == p {
			return n
		}
	}
	return ""
}

func (u *UBoot) other(slot string) string {
	for _, n := range u.names {
		if n != slot {
			return n
		}
	}
	return ""
}

func envInt(env Env, name string) int {
	v, err := strconv.Atoi(strings.TrimSpace(env[name]))
	if err != nil {
		return 0
	}
	return v
}

func (u *UBoot) menderState(env Env) BootState {
	cur := u.menderName(env)
	st := BootState{Tries: map[string]int{}}
	if cur == "" {
		return st
	}
	if env[VarUpgrade] != "1" {
		st.Primary = cur
		return st
	}
	limit := envInt(env, VarBootlimit)
	if limit < 1 {
		limit = 1
	}
	left := max(limit-envInt(env, VarBootcount), 0)
	st.Tries[cur] = left
	st.Primary = u.other(cur)
	booted := u.booted()
	switch {
	case left > 0 && envInt(env, VarBootcount) == 0:
		st.Pending = cur
	case envInt(env, VarBootcount) > 0 && (booted == cur || booted == ""):
		st.Trial = cur
	}
	return st
}

func (u *UBoot) setPart(env Env, slot string) {
	env[VarMenderPart] = strconv.Itoa(u.parts[slot])
	env[VarMenderPartHex] = strconv.FormatInt(int64(u.parts[slot]), 16)
}

func (u *UBoot) menderTry(env Env, slot string) error {
	u.setPart(env, slot)
	env[VarUpgrade] = "1"
	env[VarBootcount] = "0"
	env[VarBootlimit] = "1"
	return nil
}

func (u *UBoot) menderCommit(env Env, slot string) error {
	u.setPart(env, slot)
	env[VarUpgrade] = "0"
	env[VarBootcount] = "0"
	return nil
}

func (u *UBoot) menderMarkBad(env Env, slot string) error {
	if u.menderName(env) == slot {
		u.setPart(env, u.other(slot))
	}
	env[VarUpgrade] = "0"
	env[VarBootcount] = "0"
	return nil
}
