package sim

import (
	"fmt"
	"slices"
)

// Behaviour is what a slot does when it boots.
type Behaviour int

// Behaviours. Default (in RebootWith) means "use the slot's own".
const (
	Default Behaviour = iota
	OK                // reaches userspace; someone may commit it
	Hang              // hangs; the watchdog resets the board
	Crash             // kernel panic; the board reboots by itself
)

var behaviourNames = map[Behaviour]string{Default: "default", OK: "ok", Hang: "hang", Crash: "crash"}

func (bh Behaviour) String() string {
	if n, ok := behaviourNames[bh]; ok {
		return n
	}
	return fmt.Sprintf("Behaviour(%d)", int(bh))
}

// MarshalText encodes a behaviour by name.
func (bh Behaviour) MarshalText() ([]byte, error) {
	n, ok := behaviourNames[bh]
	if !ok {
		return nil, fmt.Errorf("%w: behaviour %d", ErrOptions, int(bh))
	}
	return []byte(n), nil
}

// UnmarshalText decodes a behaviour name.
func (bh *Behaviour) UnmarshalText(b []byte) error {
	for k, v := range behaviourNames {
		if v == string(b) {
			*bh = k
			return nil
		}
	}
	return fmt.Errorf("%w: behaviour %q", ErrCorrupt, b)
}

// Boot is one simulated boot.
type Boot struct {
	N         int       `json:"n"`         // boot number since the state was created, from 1
	Slot      string    `json:"slot"`      // slot the script booted
	Behaviour Behaviour `json:"behaviour"` // what it did
	Trial     bool      `json:"trial"`     // it was the one-shot try of a pending slot
	Reset     bool      `json:"reset"`     // the script found no tries left and reset the counters
}

// maxCycles bounds one Reboot when every slot keeps failing.
const maxCycles = 100

// Reboot power-cycles the board: the boot script picks a slot, and if that
// slot hangs or crashes the board resets and the script runs again, until a
// slot boots OK. It returns the slot that came up.
func (b *Bootloader) Reboot() (string, error) { return b.RebootWith(Default) }

// RebootWith is Reboot with the first boot of this power cycle behaving as
// first (Default: the slot's own behaviour). Later boots in the same cycle
// use each slot's own behaviour.
func (b *Bootloader) RebootWith(first Behaviour) (string, error) {
	if _, ok := behaviourNames[first]; !ok {
		return "", fmt.Errorf("reboot: %w: behaviour %d", ErrOptions, int(first))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := readState(b.dir)
	if err != nil {
		return "", fmt.Errorf("reboot: %w", err)
	}
	for cycle := 0; cycle < maxCycles; cycle++ {
		slot, reset := bootScript(st)
		bh := st.Behaviour[slot]
		if bh == Default {
			bh = OK
		}
		if cycle == 0 && first != Default {
			bh = first
		}
		trial := slot == st.Pending
		st.Pending = ""
		st.Trial = ""
		if trial {
			st.Trial = slot
		}
		st.Booted = slot
		st.BootCount++
		st.Boots = append(st.Boots, Boot{N: st.BootCount, Slot: slot, Behaviour: bh, Trial: trial, Reset: reset})
		if len(st.Boots) > maxBoots {
			st.Boots = slices.Delete(st.Boots, 0, len(st.Boots)-maxBoots)
		}
		if err := b.save(st); err != nil {
			return "", fmt.Errorf("reboot: %w", err)
		}
		if bh == OK {
			return slot, nil
		}
	}
	return "", fmt.Errorf("reboot: %w after %d boots: every slot hangs or crashes", ErrNoBoot, maxCycles)
}

// bootScript is the U-Boot script's choice (targets/armv7/boot.cmd): an
// empty order becomes the default order; then the first slot in the order
// with tries left is chosen and decremented. With none left every counter
// goes back to full and the script chooses again.
func bootScript(st *state) (slot string, reset bool) {
	if len(st.Order) == 0 {
		st.Order = slices.Clone(st.Slots)
	}
	for {
		for _, s := range st.Order {
			if st.Tries[s] > 0 {
				st.Tries[s]--
				return s, reset
			}
		}
		reset = true
		for _, s := range st.Slots {
			st.Tries[s] = st.FullTries
		}
	}
}
