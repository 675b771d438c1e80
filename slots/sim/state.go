package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/autopatcher/autopatcher/slots"
)

// File names inside the simulator's directory.
const (
	stateName = "state.json"
	tempName  = stateName + ".tmp"
	maxState  = 1 << 20 // cap on what a state read accepts
)

// state is what state.json holds. Order and Tries are the boot script's
// variables (BOOT_ORDER, BOOT_x_LEFT); the rest is bookkeeping of the
// simulated board.
type state struct {
	Version   int                  `json:"version"`
	Slots     []string             `json:"slots"`     // all slots, default order
	FullTries int                  `json:"fullTries"` // tries a commit gives
	Order     []string             `json:"order"`     // BOOT_ORDER
	Tries     map[string]int       `json:"tries"`     // BOOT_x_LEFT
	Pending   string               `json:"pending,omitempty"`
	Trial     string               `json:"trial,omitempty"`
	Booted    string               `json:"booted"`
	Behaviour map[string]Behaviour `json:"behaviour,omitempty"`
	BootCount int                  `json:"bootCount"`
	Boots     []Boot               `json:"boots,omitempty"` // last maxBoots boots
}

const maxBoots = 64

func newState(slots []string, full int) *state {
	st := &state{
		Version:   1,
		Slots:     slices.Clone(slots),
		FullTries: full,
		Order:     slices.Clone(slots),
		Tries:     map[string]int{},
		Booted:    slots[0],
	}
	for _, s := range slots {
		st.Tries[s] = full
	}
	return st
}

// check rejects a state that the boot script could not run on.
func (st *state) check() error {
	if st.Version != 1 {
		return fmt.Errorf("%w: version %d", ErrCorrupt, st.Version)
	}
	if len(st.Slots) == 0 {
		return fmt.Errorf("%w: no slots", ErrCorrupt)
	}
	if st.FullTries < 2 || st.FullTries > 9 {
		return fmt.Errorf("%w: fullTries %d", ErrCorrupt, st.FullTries)
	}
	seen := map[string]bool{}
	for _, s := range st.Order {
		if !slices.Contains(st.Slots, s) || seen[s] {
			return fmt.Errorf("%w: order %q", ErrCorrupt, st.Order)
		}
		seen[s] = true
	}
	for _, s := range st.Slots {
		if n := st.Tries[s]; n < 0 || n > st.FullTries {
			return fmt.Errorf("%w: tries of %s = %d", ErrCorrupt, s, n)
		}
	}
	if !slices.Contains(st.Slots, st.Booted) {
		return fmt.Errorf("%w: booted slot %q", ErrCorrupt, st.Booted)
	}
	for _, s := range []string{st.Pending, st.Trial} {
		if s != "" && !slices.Contains(st.Slots, s) {
			return fmt.Errorf("%w: unknown slot %q", ErrCorrupt, s)
		}
	}
	return nil
}

func readState(dir string) (*state, error) {
	f, err := os.Open(filepath.Join(dir, stateName))
	if err != nil {
		return nil, fmt.Errorf("read sim state: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxState+1))
	if err != nil {
		return nil, fmt.Errorf("read sim state: %w", err)
	}
	if len(data) > maxState {
		return nil, fmt.Errorf("read sim state: %w: larger than %d bytes", ErrCorrupt, maxState)
	}
	st := &state{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("read sim state: %w: %v", ErrCorrupt, err)
	}
	if err := st.check(); err != nil {
		return nil, fmt.Errorf("read sim state: %w", err)
	}
	return st, nil
}

// writeState replaces state.json atomically. tear, when >= 0, simulates a
// power cut after tear bytes of the temporary file.
func writeState(dir string, st *state, tear int) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sim state: %w", err)
	}
	data = append(data, '\n')
	var wrap func(io.Writer) io.Writer
	if tear >= 0 {
		wrap = func(w io.Writer) io.Writer { return &tornWriter{w: w, left: min(tear, len(data)), total: len(data)} }
	}
	if err := slots.ReplaceFile(filepath.Join(dir, stateName), data, 0o644, wrap); err != nil {
		return fmt.Errorf("write sim state: %w", err)
	}
	return nil
}

// tornWriter passes on left bytes, then fails as a power cut would; data
// holds the whole write, so it is called once.
type tornWriter struct {
	w                    io.Writer
	left, written, total int
}

func (t *tornWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p[:min(len(p), t.left)])
	t.left -= n
	t.written += n
	if err == nil && t.left == 0 { // the cut comes before the fsync and rename, even when every byte got out
		err = fmt.Errorf("%w after %d of %d bytes", ErrPowerCut, t.written, t.total)
	}
	return n, err
}
