package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/autopatcher/autopatcher/slots/sim"
)

// failAfter passes n bytes through, then fails as a power cut would.
type failAfter struct {
	w io.Writer
	n *int64
}

func (f failAfter) Write(b []byte) (int, error) {
	if *f.n <= 0 {
		return 0, errPowerCut
	}
	if int64(len(b)) > *f.n {
		k, _ := f.w.Write(b[:*f.n])
		*f.n = 0
		return k, errPowerCut
	}
	*f.n -= int64(len(b))
	return f.w.Write(b)
}

// cutPlan says where one run loses power: at the at-th crash point, or
// after bytes bytes of component comp have been written.
type cutPlan struct {
	name    string
	at      int // 1-based occurrence of a crash point; 0 = none
	comp    string
	bytes   int64
	simTear int // tear the n-th bootloader state write (sim.TearWrite); 0 = none
}

// TestPowerCut cuts the power at every persisted transition and named
// point of the install, trial, commit and rollback paths, and at random
// byte offsets inside the slot and package writes. After each cut the
// board reboots and the daemon resumes; the device must end on a bootable
// slot in a consistent state, the update either committed or cleanly
// abandoned / rolled back.
func TestPowerCut(t *testing.T) {
	base := newRig(t)
	img := randomBytes(11, 300<<10)
	files := map[string]string{"bin/app": "v2", "share/data": string(randomBytes(12, 40<<10))}
	bundlePath := base.build(spec{version: "2.0.0", security: 7, comps: []comp{
		image("rootfs", "2.0.0", img),
		pkg("app", "2.0.0", files),
	}})

	rng := rand.New(rand.NewPCG(1, 2))
	total := 0
	for _, healthy := range []bool{true, false} {
		// Dry run: record the crash points this path passes.
		var points []string
		runCut(t, base, bundlePath, img, healthy, cutPlan{}, &points)
		plans := []cutPlan{}
		for i, p := range points {
			plans = append(plans, cutPlan{name: fmt.Sprintf("point %d %s", i+1, p), at: i + 1})
		}
		offsets := 60
		if !healthy {
			offsets = 30
		}
		for _, c := range []struct {
			name string
			size int
		}{{"rootfs", len(img)}, {"app", len(tarOf(files))}} {
			for range offsets {
				n := rng.Int64N(int64(c.size))
				plans = append(plans, cutPlan{name: fmt.Sprintf("%s byte %d", c.name, n), comp: c.name, bytes: n})
			}
		}
		// Cuts inside the bootloader's own state writes (Try, Commit,
		// MarkBad and the boot script's counter updates).
		for n := 1; n <= 8; n++ {
			plans = append(plans, cutPlan{name: fmt.Sprintf("bootloader write %d", n), simTear: n})
		}
		for _, p := range plans {
			name := fmt.Sprintf("healthy=%v/%s", healthy, p.name)
			runCut(t, base, bundlePath, img, healthy, p, nil)
			if t.Failed() {
				t.Fatalf("%s: failed", name)
			}
			total++
		}
	}
	t.Logf("power cut at %d crash points; every run ended on a bootable, consistent slot", total)
	if total < 200 {
		t.Errorf("only %d crash points, want at least 200", total)
	}
}

// runCut runs one install → reboot → trial → commit/rollback with the power
// cut planned, then checks the device. With record set it only records the
// crash points passed. It reports whether the update ended committed.
func runCut(t *testing.T, base *rig, bundlePath string, img []byte, healthy bool, plan cutPlan, record *[]string) bool {
	t.Helper()
	r := newRig(t)
	r.key, r.trust = base.key, base.trust
	if !healthy {
		r.health = failHealth{}
	}
	factory := r.slotBytes("A")
	seen, fired := 0, false
	r.crash = func(point string) error {
		if record != nil {
			*record = append(*record, point)
			return nil
		}
		seen++
		if plan.at != 0 && seen == plan.at && !fired {
			fired = true
			return fmt.Errorf("at %s: %w", point, errPowerCut)
		}
		return nil
	}
	if plan.comp != "" {
		left := plan.bytes
		r.wrap = func(c string, w io.Writer) io.Writer {
			if c != plan.comp || fired {
				return w
			}
			fired = true
			return failAfter{w, &left}
		}
	}
	if plan.simTear > 0 {
		r.boot.TearWrite(plan.simTear, 9)
	}
	e := r.engine()
	_, err := r.install(e, bundlePath, InstallOptions{})
	seenReboots := 0
	for round := 0; ; round++ {
		if round > 10 {
			t.Fatalf("%s: no end after %d boots", plan.name, round)
		}
		cut := errors.Is(err, errPowerCut) || errors.Is(err, sim.ErrPowerCut)
		if err != nil && !cut {
			t.Fatalf("%s: round %d: %v", plan.name, round, err)
		}
		if !cut && r.reboots == seenReboots {
			break
		}
		seenReboots = r.reboots
		if err := powerCycle(r); err != nil {
			t.Fatalf("%s: %v", plan.name, err)
		}
		e = r.engine()
		err = e.ConfirmBoot(context.Background())
		if err == nil {
			_, err = e.Resume(context.Background())
		}
	}
	if record != nil {
		return false
	}
	// The device must be consistent now.
	rec := r.state(e)
	bs, err := r.boot.State()
	if err != nil {
		t.Fatal(err)
	}
	booted := r.boot.Booted()
	if !terminal(rec.State) || e.journal().Exists() {
		t.Errorf("%s: ended in state %s (journal %v)", plan.name, rec.State, e.journal().Exists())
	}
	if bs.Primary != booted || bs.Pending != "" || bs.Trial != "" {
		t.Errorf("%s: booted %s with boot state %+v", plan.name, booted, bs)
	}
	current, _ := os.Readlink(filepath.Join(r.cfg.DataDir, "packages", "app", "current"))
	committed := rec.Last != nil && rec.Last.State == Committed
	if committed {
		if !healthy {
			t.Errorf("%s: unhealthy update committed", plan.name)
		}
		if booted != "B" || !bytes.Equal(r.slotBytes("B")[:len(img)], img) || rec.SecurityVersion != 7 || rec.Current == nil {
			t.Errorf("%s: committed but booted %s, counter %d", plan.name, booted, rec.SecurityVersion)
		}
		b, _ := os.ReadFile(filepath.Join(r.cfg.DataDir, "packages", "app", "current", "bin", "app"))
		if current == "" || string(b) != "v2" {
			t.Errorf("%s: committed but package current %q holds %q", plan.name, current, b)
		}
	} else {
		if booted != "A" || !bytes.Equal(r.slotBytes("A"), factory) || rec.SecurityVersion != 0 || rec.Current != nil {
			t.Errorf("%s: not committed but booted %s, counter %d, current %v", plan.name, booted, rec.SecurityVersion, rec.Current)
		}
		if _, err := os.Lstat(filepath.Join(r.cfg.DataDir, "packages", "app")); err == nil {
			t.Errorf("%s: abandoned package left in place", plan.name)
		}
		// No result at all is fine when the cut came before anything was persisted.
		if rec.Last != nil && rec.Last.State != Abandoned && rec.Last.State != RolledBack {
			t.Errorf("%s: last result %+v", plan.name, rec.Last)
		}
	}
	// In every case, the device still boots after another power cycle.
	if err := powerCycle(r); err != nil || r.boot.Booted() != booted {
		t.Errorf("%s: next boot %s, %v; want %s", plan.name, r.boot.Booted(), err, booted)
	}
	return committed
}

// powerCycle reboots the simulated board; a cut inside the boot script's
// own state write just means powering on again.
func powerCycle(r *rig) error {
	for {
		_, err := r.boot.Reboot()
		if !errors.Is(err, sim.ErrPowerCut) {
			return err
		}
	}
}
