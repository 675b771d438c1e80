package sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/autopatcher/autopatcher/slots"
)

// Sentinel errors.
var (
	ErrUnknownSlot = errors.New("sim: unknown slot")
	ErrCorrupt     = errors.New("sim: corrupt state")
	ErrPowerCut    = errors.New("sim: power cut during state write")
	ErrNoBoot      = errors.New("sim: no slot booted")
	ErrOptions     = errors.New("sim: bad options")
)

// DefaultTries is the number of tries a committed slot gets, as in the
// U-Boot script.
const DefaultTries = 3

// Bootloader is a simulated board's boot selection. It implements
// slots.Bootloader. It is safe for concurrent use.
type Bootloader struct {
	dir string

	mu       sync.Mutex
	writes   int // state writes since New
	tearAt   int // write number to tear, 0 = none
	tearSize int
}

var _ slots.Bootloader = (*Bootloader)(nil)

// Option configures a new simulator. Options only apply when the directory
// holds no state yet; an existing state keeps its slots and tries.
type Option func(*options)

type options struct {
	slots []string
	tries int
}

// WithSlots sets the slot names in default boot order (default "A", "B").
func WithSlots(names ...string) Option {
	return func(o *options) { o.slots = names }
}

// WithTries sets the tries a committed slot gets, 2..9 (default 3).
func WithTries(n int) Option {
	return func(o *options) { o.tries = n }
}

// New opens the simulator whose state lives in dir, creating dir and a fresh
// state (all slots in default order with full tries, the first one booted)
// if there is none. New only reads an existing state: the temporary file
// of a write (torn by a power cut, or under way in another process that
// has the simulator open, such as a daemon while `autopatchd status`
// runs) is left alone, and the next write replaces it.
func New(dir string, opts ...Option) (*Bootloader, error) {
	o := options{slots: []string{"A", "B"}, tries: DefaultTries}
	for _, opt := range opts {
		opt(&o)
	}
	// As the U-Boot backend: one digit for the script's hex counters, and
	// at least two, since one try is what a trial gets.
	if len(o.slots) == 0 || o.tries < 2 || o.tries > 9 {
		return nil, fmt.Errorf("%w: need at least one slot and 2..9 tries", ErrOptions)
	}
	for i, s := range o.slots {
		if s == "" || slices.Contains(o.slots[:i], s) {
			return nil, fmt.Errorf("%w: slot names %q", ErrOptions, o.slots)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open sim: %w", err)
	}
	b := &Bootloader{dir: dir}
	if _, err := os.Stat(filepath.Join(dir, stateName)); errors.Is(err, os.ErrNotExist) {
		if err := writeState(dir, newState(o.slots, o.tries), -1); err != nil {
			return nil, fmt.Errorf("open sim: %w", err)
		}
	} else if _, err := readState(dir); err != nil {
		return nil, fmt.Errorf("open sim: %w", err)
	}
	return b, nil
}

// Dir returns the directory holding the state.
func (b *Bootloader) Dir() string { return b.dir }

// TearWrite arms a simulated power cut: the n-th state write from now
// (n = 1 is the next one) stops after k bytes of the temporary file and
// fails with ErrPowerCut. The live state stays as it was. n <= 0 disarms.
func (b *Bootloader) TearWrite(n, k int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n <= 0 {
		b.tearAt = 0
		return
	}
	b.tearAt = b.writes + n
	b.tearSize = max(k, 0)
}

// update loads the state, applies fn, and writes the result if fn succeeds.
func (b *Bootloader) update(fn func(st *state) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := readState(b.dir)
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	return b.save(st)
}

func (b *Bootloader) save(st *state) error {
	b.writes++
	tear := -1
	if b.tearAt != 0 && b.writes == b.tearAt {
		tear = b.tearSize
		b.tearAt = 0
	}
	return writeState(b.dir, st, tear)
}

func (b *Bootloader) load() (*state, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return readState(b.dir)
}

func known(st *state, slot string) error {
	if !slices.Contains(st.Slots, slot) {
		return fmt.Errorf("%w: %q", ErrUnknownSlot, slot)
	}
	return nil
}

// toFront moves slot to the front of the order, keeping the others' order.
func toFront(order []string, slot string) []string {
	out := []string{slot}
	for _, s := range order {
		if s != slot {
			out = append(out, s)
		}
	}
	return out
}

// Try puts slot first in the boot order with one try: the next boot runs it
// once, and the boot after that falls back unless Commit was called.
func (b *Bootloader) Try(slot string) error {
	return b.update(func(st *state) error {
		if err := known(st, slot); err != nil {
			return fmt.Errorf("try slot: %w", err)
		}
		st.Order = toFront(st.Order, slot)
		st.Tries[slot] = 1
		st.Pending = slot
		if st.Trial == slot {
			st.Trial = ""
		}
		return nil
	})
}

// Commit puts slot first in the boot order with full tries.
func (b *Bootloader) Commit(slot string) error {
	return b.update(func(st *state) error {
		if err := known(st, slot); err != nil {
			return fmt.Errorf("commit slot: %w", err)
		}
		st.Order = toFront(st.Order, slot)
		st.Tries[slot] = st.FullTries
		if st.Pending == slot {
			st.Pending = ""
		}
		if st.Trial == slot {
			st.Trial = ""
		}
		return nil
	})
}

// MarkBad removes slot from the boot order with no tries left.
func (b *Bootloader) MarkBad(slot string) error {
	return b.update(func(st *state) error {
		if err := known(st, slot); err != nil {
			return fmt.Errorf("mark slot bad: %w", err)
		}
		st.Order = slices.DeleteFunc(st.Order, func(s string) bool { return s == slot })
		st.Tries[slot] = 0
		if st.Pending == slot {
			st.Pending = ""
		}
		if st.Trial == slot {
			st.Trial = ""
		}
		return nil
	})
}

// State reports the boot selection. Primary is the slot the boot script
// falls back to when the pending or running trial is not committed.
func (b *Bootloader) State() (slots.BootState, error) {
	st, err := b.load()
	if err != nil {
		return slots.BootState{}, err
	}
	bs := slots.BootState{
		Primary: primary(st),
		Pending: st.Pending,
		Trial:   st.Trial,
		Tries:   make(map[string]int, len(st.Tries)),
	}
	for _, s := range st.Slots {
		bs.Tries[s] = st.Tries[s]
		if !slices.Contains(st.Order, s) {
			bs.Bad = append(bs.Bad, s)
		}
	}
	return bs, nil
}

// primary is the slot the boot script picks once the pending and trial
// slots are out of the way.
func primary(st *state) string {
	skip := func(s string) bool { return s == st.Pending || s == st.Trial }
	for _, s := range st.Order {
		if !skip(s) && st.Tries[s] > 0 {
			return s
		}
	}
	for _, s := range st.Order {
		if !skip(s) {
			return s
		}
	}
	if len(st.Order) > 0 {
		return st.Order[0]
	}
	return st.Slots[0]
}

// Vars returns the boot variables as the U-Boot environment holds them:
// BOOT_ORDER="A B", BOOT_A_LEFT="3", ...
func (b *Bootloader) Vars() (map[string]string, error) {
	st, err := b.load()
	if err != nil {
		return nil, err
	}
	v := map[string]string{"BOOT_ORDER": strings.Join(st.Order, " ")}
	for _, s := range st.Slots {
		v["BOOT_"+s+"_LEFT"] = fmt.Sprint(st.Tries[s])
	}
	return v, nil
}

// SetBehaviour sets what happens when slot boots from now on.
func (b *Bootloader) SetBehaviour(slot string, bh Behaviour) error {
	if _, ok := behaviourNames[bh]; !ok || bh == Default {
		return fmt.Errorf("set behaviour: %w: behaviour %d", ErrOptions, bh)
	}
	return b.update(func(st *state) error {
		if err := known(st, slot); err != nil {
			return fmt.Errorf("set behaviour: %w", err)
		}
		if bh == OK {
			delete(st.Behaviour, slot)
			return nil
		}
		if st.Behaviour == nil {
			st.Behaviour = map[string]Behaviour{}
		}
		st.Behaviour[slot] = bh
		return nil
	})
}

// Booted returns the slot running now ("" if the state cannot be read).
func (b *Bootloader) Booted() string {
	st, err := b.load()
	if err != nil {
		return ""
	}
	return st.Booted
}

// Cmdline returns a kernel command line for the running slot, as the U-Boot
// script passes it ("... autopatcher.slot=A rauc.slot=A").
func (b *Bootloader) Cmdline() string {
	s := b.Booted()
	return "console=ttyAMA0,115200 panic=5 autopatcher.slot=" + s + " rauc.slot=" + s
}

// Boots returns the most recent simulated boots, oldest first (at most 64).
func (b *Bootloader) Boots() ([]Boot, error) {
	st, err := b.load()
	if err != nil {
		return nil, err
	}
	return st.Boots, nil
}
