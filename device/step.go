package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/autopatcher/autopatcher/transport"
)

// errPowerCut is what injected crashes return; the engine stops at once,
// cleaning nothing up, as a power cut would.
var errPowerCut = errors.New("device: simulated power cut")

func isPowerCut(err error) bool { return errors.Is(err, errPowerCut) }

// CommandRebooter reboots by running a command (default: systemctl reboot).
type CommandRebooter []string

// Reboot runs the command.
func (c CommandRebooter) Reboot(ctx context.Context) error {
	if len(c) == 0 {
		return fmt.Errorf("reboot: no reboot command configured")
	}
	if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("reboot: %s: %v: %s", c[0], err, out)
	}
	return nil
}

// Step makes at most one state transition and reports whether another one
// can follow at once (false: nothing to do, or waiting for a reboot, the
// window, or the hub). status names what the engine waits for.
func (e *Engine) Step(ctx context.Context) (more bool, status string, err error) {
	unlock, err := e.lock()
	if err != nil {
		return false, "", err
	}
	defer unlock()
	if err := e.recoverJournal(ctx); err != nil {
		return false, "", err
	}
	return e.step(ctx)
}

// advance steps until the engine has to wait; the caller holds the lock.
func (e *Engine) advance(ctx context.Context) (string, error) {
	for range maxTransitions + 2 {
		more, status, err := e.step(ctx)
		if err != nil || !more {
			return status, err
		}
	}
	return "", ErrRunaway
}

// Resume finishes whatever the persisted state says is under way, as the
// daemon does at start: an interrupted write is cleaned up, a trial boot is
// checked and committed or failed, a failed trial is reported as rolled back.
func (e *Engine) Resume(ctx context.Context) (string, error) {
	unlock, err := e.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := e.recoverJournal(ctx); err != nil {
		return "", err
	}
	return e.advance(ctx)
}

// ConfirmBoot runs once per boot, before Resume. Unless the running boot is
// the trial of the update under way, it commits the running slot again,
// refilling its boot tries on backends that count them (the boot script
// counts every boot down; RAUC's mark-good does the same). A trial boot of
// a slot no update asked for is marked bad and rebooted out of. Install,
// Prepare and the bootloader try confirm the boot themselves first, so it
// does not matter which takes the engine's lock first after a boot.
func (e *Engine) ConfirmBoot(ctx context.Context) error {
	unlock, err := e.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := e.recoverJournal(ctx); err != nil {
		return err
	}
	rec, err := e.load()
	if err != nil {
		return err
	}
	err = e.confirm(rec)
	if errors.Is(err, errStrayTrial) && terminal(rec.State) {
		booted, _ := e.o.Booted()
		e.log.Warn("trial boot without an update under way; marking it bad", "slot", booted)
		if err := e.o.Bootloader.MarkBad(booted); err != nil {
			return fmt.Errorf("mark slot %s bad: %w", booted, err)
		}
		return e.o.Rebooter.Reboot(ctx)
	}
	return err
}

// errStrayTrial: the running boot is a trial no update asked for.
var errStrayTrial = errors.New("device: the running boot is a trial no update asked for")

// confirmedName is the file on the data dir holding the boot id of the
// last boot confirmed.
const confirmedName = "boot-confirmed"

// confirm confirms the running boot once (the caller holds the lock):
// with no try pending and the running slot the bootloader's primary, it is
// committed again, which refills its tries. The trial boot of the update
// under way is left to the trial's commit. The boot id is recorded, so
// later calls in the same boot cost one read.
func (e *Engine) confirm(rec *Record) error {
	id, _ := e.o.BootID()
	if id != "" {
		if b, err := os.ReadFile(e.confirmedPath()); err == nil && string(b) == id {
			return nil
		}
	}
	booted, err := e.o.Booted()
	if err != nil {
		return fmt.Errorf("find booted slot: %w", err)
	}
	if !terminal(rec.State) && rec.Target != "" && booted == rec.Target {
		return nil // the trial of this update: its commit confirms it
	}
	bs, err := e.o.Bootloader.State()
	if err != nil {
		return fmt.Errorf("read bootloader state: %w", err)
	}
	// A slot this engine already gave up on (its trial failed or its update
	// was abandoned) is never confirmed: if the bootloader runs it anyway,
	// that is a trial nobody asked for.
	if terminal(rec.State) && (rec.State == RolledBack || rec.State == Abandoned) && rec.Target == booted {
		return fmt.Errorf("%w: slot %s", errStrayTrial, booted)
	}
	// A backend without try counters (tryboot) reports a trial only when
	// the firmware really made a one-shot try; one that no update asked for
	// is not kept. (A backend that may keep reporting the running boot as a
	// trial after the commit has made it the primary by then.)
	if len(bs.Tries) == 0 && bs.Trial != "" && bs.Trial == booted && bs.Primary != booted {
		return fmt.Errorf("%w: slot %s", errStrayTrial, booted)
	}
	// Only backends that count boot tries need them refilled; a pending
	// try (set on this boot) must not be overwritten. The running slot is
	// confirmed even when it is not the primary any more: its tries ran
	// down over boots the daemon never confirmed (a crash, or power cut
	// early each time), and without a refill the next boot would fall back
	// to the other slot, which may hold anything.
	if bs.Pending == "" && len(bs.Tries) > 0 && (booted == bs.Primary || bs.Tries[booted] < bs.Tries[bs.Primary] || bs.Primary == "") {
		if err := e.o.Bootloader.Commit(booted); err != nil {
			return fmt.Errorf("confirm slot %s: %w", booted, err)
		}
		e.log.Info("boot confirmed", "slot", booted)
	}
	return e.markConfirmed(id)
}

func (e *Engine) confirmedPath() string { return filepath.Join(e.cfg.DataDir, confirmedName) }

// markConfirmed records boot id as confirmed. The marker only saves the
// next confirm of this boot its work: a marker lost or torn by a crash
// never matches a boot id (the next boot has a new one), so it is written
// in place, without a temp file or fsync.
func (e *Engine) markConfirmed(id string) error {
	if id == "" {
		return nil
	}
	if err := os.WriteFile(e.confirmedPath(), []byte(id), 0o600); err != nil {
		return fmt.Errorf("record boot confirmation: %w", err)
	}
	return nil
}

// Run is the daemon loop: ConfirmBoot and Resume, then every poll interval
// step again (to pick up installs made by the command line, windows that
// open, hub orders). After a failed step it retries sooner, from
// retryFirst doubling up to poll, so that a passing failure (a busy
// device, a lock held for a moment) does not hold a trial or a commit
// back for a whole poll interval.
func (e *Engine) Run(ctx context.Context, poll time.Duration) error {
	if err := e.ConfirmSelfUpdate(); err != nil {
		if errors.Is(err, ErrRestart) {
			return err
		}
		e.log.Error("confirm self-update", "err", err)
	}
	if err := e.ConfirmBoot(ctx); err != nil {
		e.log.Error("confirm boot", "err", err)
	}
	retry := retryFirst
	for {
		status, err := e.Resume(ctx)
		if e.BinaryReplaced() {
			return ErrRestart
		}
		wait := poll
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait, retry = min(retry, poll), min(2*retry, poll)
			e.log.Error("update engine", "err", err, "retry_in", wait)
		} else {
			retry = retryFirst
			if status != "" && status != Idle.String() {
				e.log.Debug("update engine waiting", "status", status)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// retryFirst is Run's first wait after a failed step.
const retryFirst = time.Second

func (e *Engine) step(ctx context.Context) (bool, string, error) {
	rec, err := e.load()
	if err != nil {
		return false, "", err
	}
	if terminal(rec.State) {
		return false, rec.State.String(), nil
	}
	booted, err := e.o.Booted()
	if err != nil {
		return false, "", fmt.Errorf("find booted slot: %w", err)
	}
	bs, err := e.o.Bootloader.State()
	if err != nil {
		return false, "", fmt.Errorf("read bootloader state: %w", err)
	}
	rec.Transitions++
	if rec.Transitions > maxTransitions {
		reason := fmt.Sprintf("%v after %d steps in state %s", ErrRunaway, maxTransitions, rec.State)
		if rec.Target != "" && booted == rec.Target {
			rec.Reason = reason
			return true, "", e.save(rec, Failed)
		}
		return false, RolledBack.String(), e.rolledBack(ctx, rec, reason)
	}
	onTarget := rec.Target != "" && booted == rec.Target
	switch rec.State {
	case Downloading:
		// The agent fetching the chunks finishes it (Download.Finish) or
		// abandons it; waiting for it is not a transition.
		return false, Downloading.String(), nil
	case Verifying, Writing:
		return false, RolledBack.String(), e.rolledBack(ctx, rec, "install interrupted while writing")

	case Written:
		if rec.Target == "" {
			return true, "", e.save(rec, Committing)
		}
		if onTarget {
			return true, "", e.save(rec, Trial)
		}
		// The try needs the running slot as its fallback: confirm it first.
		if err := e.confirm(rec); err != nil {
			e.log.Warn("confirm boot before the try", "err", err)
		}
		if err := e.o.Bootloader.Try(rec.Target); err != nil {
			// Retrying cannot help a try the bootloader refuses: the
			// update ends here, reported with the reason.
			reason := fmt.Sprintf("try slot %s: %v", rec.Target, err)
			e.log.Error("bootloader refused the try; update abandoned", "slot", rec.Target, "err", err)
			return false, Abandoned.String(), e.rolledBack(ctx, rec, reason)
		}
		if err := e.crashAt("after-try"); err != nil {
			return false, "", err
		}
		return true, "", e.save(rec, TrySet)

	case TrySet:
		if onTarget {
			return true, "", e.save(rec, Trial)
		}
		rec.BootID, _ = e.o.BootID()
		return true, "", e.save(rec, Rebooting)

	case Rebooting:
		if onTarget {
			return true, "", e.save(rec, Trial)
		}
		id, _ := e.o.BootID()
		rebooted := rec.BootID != "" && id != "" && id != rec.BootID
		if rebooted || (id == "" && bs.Pending != rec.Target) {
			return false, RolledBack.String(), e.rolledBack(ctx, rec, fmt.Sprintf(
				"trial boot of slot %s did not come up (hang, crash, watchdog reset or lost try flag); running %s", rec.Target, booted))
		}
		if bs.Pending != rec.Target {
			if err := e.o.Bootloader.Try(rec.Target); err != nil {
				reason := fmt.Sprintf("try slot %s again before the reboot: %v", rec.Target, err)
				e.log.Error("bootloader refused the try; update abandoned", "slot", rec.Target, "err", err)
				rec.State = Written // never booted: abandoned
				return false, Abandoned.String(), e.rolledBack(ctx, rec, reason)
			}
		}
		// Waiting for the hub or the window is not a transition: nothing is
		// saved, so a long wait never counts against the runaway cap.
		policy, window := e.cfg.Reboot.Policy, e.cfg.Reboot.Window
		if rec.Reboot != nil && rec.Reboot.Policy != "" {
			policy, window = rec.Reboot.Policy, rec.Reboot.Window
		}
		switch policy {
		case RebootHub:
			return false, StatusWaitingHub, nil
		case RebootWindow:
			w, err := transport.ParseWindow(window, e.cfg.Reboot.TimeZone)
			if err != nil {
				return false, "", err
			}
			if !w.Contains(e.o.Now()) {
				return false, StatusWaitingWindow, nil
			}
		}
		// Each reboot request counts: a reboot that never happens ends in
		// the cap instead of a loop.
		if err := e.save(rec, Rebooting); err != nil {
			return false, "", err
		}
		return false, StatusRebooting, e.reboot(ctx, rec)

	case Trial:
		if !onTarget {
			return false, RolledBack.String(), e.rolledBack(ctx, rec, fmt.Sprintf(
				"trial of slot %s was interrupted (hang, watchdog reset or power loss); bootloader fell back to %s", rec.Target, booted))
		}
		if err := e.trial(ctx, rec); err != nil {
			if ctx.Err() != nil {
				return false, "", ctx.Err()
			}
			rec.Reason = err.Error()
			return true, "", e.save(rec, Failed)
		}
		return true, "", e.save(rec, Committing)

	case Committing:
		if rec.Target != "" && !onTarget {
			return false, RolledBack.String(), e.rolledBack(ctx, rec, fmt.Sprintf(
				"power lost before slot %s was committed; bootloader fell back to %s", rec.Target, booted))
		}
		return false, StatusCommitted, e.commit(ctx, rec)

	case Failed:
		if onTarget {
			if err := e.o.Bootloader.MarkBad(rec.Target); err != nil {
				return false, "", fmt.Errorf("mark slot %s bad: %w", rec.Target, err)
			}
			if err := e.crashAt("after-mark-bad"); err != nil {
				return false, "", err
			}
			if err := e.save(rec, Failed); err != nil {
				return false, "", err
			}
			if err := e.warnHooks(ctx, HookOnRollback, rec, rec); err != nil {
				return false, "", err
			}
			return false, StatusRebooting, e.o.Rebooter.Reboot(ctx)
		}
		return false, RolledBack.String(), e.rolledBack(ctx, rec, rec.Reason)
	}
	return false, "", fmt.Errorf("step: unexpected state %s", rec.State)
}
