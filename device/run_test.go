package device

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/slots"
	"github.com/autopatcher/autopatcher/slots/sim"
)

// flakyCommit is the simulated board whose first Commit fails, as a
// write that meets a busy device would.
type flakyCommit struct {
	*sim.Bootloader
	fails atomic.Int32
}

var _ slots.Bootloader = (*flakyCommit)(nil)

var errBusyEnv = errors.New("bootloader environment busy")

func (f *flakyCommit) Commit(slot string) error {
	if f.fails.Add(1) == 1 {
		return errBusyEnv
	}
	return f.Bootloader.Commit(slot)
}

// TestRunRetriesFailedStep: a commit that fails once is retried soon,
// not after the daemon's poll interval (an hour here), and the update
// ends committed.
func TestRunRetriesFailedStep(t *testing.T) {
	r := newRig(t)
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(2, 100<<10))}})
	if out, err := r.install(r.engine(), p, InstallOptions{}); err != nil || out.State != Rebooting {
		t.Fatalf("Install = %+v, %v", out, err)
	}
	if _, err := r.boot.RebootWith(sim.Default); err != nil {
		t.Fatal(err)
	}
	fb := &flakyCommit{Bootloader: r.boot}
	r.bl = fb
	e := r.engine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, time.Hour) }()
	// Generous: the retry comes after about a second; without it, after an hour.
	eventually(30*time.Second, func() bool { return r.state(e).State == Committed })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	if got := r.state(e).State; got != Committed {
		t.Errorf("state = %s, want committed after the retry", got)
	}
	if n := fb.fails.Load(); n < 2 {
		t.Errorf("Commit called %d times, want a failure then a retry", n)
	}
	if bs, _ := r.boot.State(); bs.Primary != "B" {
		t.Errorf("primary = %q, want B", bs.Primary)
	}
}
