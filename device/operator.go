package device

import (
	"context"
	"errors"
	"fmt"
)

// MarkGood commits the running trial without waiting for the health checks.
func (e *Engine) MarkGood(ctx context.Context) (string, error) {
	return e.operator(ctx, func(rec *Record, booted string) error {
		if rec.State != Trial || booted != rec.Target {
			return fmt.Errorf("%w (state %s, booted %s)", ErrNotInTrial, rec.State, booted)
		}
		return e.save(rec, Committing)
	})
}

// MarkBad fails the running trial: the slot is marked bad and the device
// reboots into the old one.
func (e *Engine) MarkBad(ctx context.Context) (string, error) {
	return e.operator(ctx, func(rec *Record, booted string) error {
		if rec.State != Trial || booted != rec.Target {
			return fmt.Errorf("%w (state %s, booted %s)", ErrNotInTrial, rec.State, booted)
		}
		rec.Reason = "marked bad by the operator"
		return e.save(rec, Failed)
	})
}

// ErrNothingToRollBack means no update is under way.
var ErrNothingToRollBack = errors.New("device: no update to roll back")

// Rollback cancels the update under way: a trial is failed (reboot into the
// old slot); an update written but not yet booted is abandoned and its
// bootloader try withdrawn.
func (e *Engine) Rollback(ctx context.Context) (string, error) {
	return e.operator(ctx, func(rec *Record, booted string) error {
		switch {
		case terminal(rec.State):
			return ErrNothingToRollBack
		case rec.State == Downloading:
			return e.abandonDownload(rec, "cancelled by the operator while downloading")
		case rec.State == Trial && booted == rec.Target:
			rec.Reason = "rolled back by the operator"
			return e.save(rec, Failed)
		case rec.State == Written || rec.State == TrySet || rec.State == Rebooting:
			rec.State = Written // never booted: the update is abandoned, not rolled back
			if err := e.rolledBack(ctx, rec, "cancelled by the operator before the reboot"); err != nil {
				return err
			}
			return nil
		}
		return fmt.Errorf("%w in state %s", ErrBusy, rec.State)
	})
}

// RebootNow performs the reboot an update waits for (reboot policy "hub").
func (e *Engine) RebootNow(ctx context.Context) error {
	unlock, err := e.lock()
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := e.load()
	if err != nil {
		return err
	}
	if rec.State != Rebooting {
		return fmt.Errorf("reboot: no update waits for a reboot (state %s)", rec.State)
	}
	return e.reboot(ctx, rec)
}

func (e *Engine) operator(ctx context.Context, fn func(rec *Record, booted string) error) (string, error) {
	unlock, err := e.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	rec, err := e.load()
	if err != nil {
		return "", err
	}
	booted, err := e.o.Booted()
	if err != nil {
		return "", fmt.Errorf("find booted slot: %w", err)
	}
	if err := fn(rec, booted); err != nil {
		return "", err
	}
	return e.advance(ctx)
}
