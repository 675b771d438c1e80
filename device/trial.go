package device

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
)

// reboot runs the pre-reboot hooks and asks the Rebooter to reboot.
func (e *Engine) reboot(ctx context.Context, rec *Record) error {
	if err := e.warnHooks(ctx, HookPreReboot, rec, rec); err != nil {
		return err
	}
	if err := e.crashAt("before-reboot"); err != nil {
		return err
	}
	return e.o.Rebooter.Reboot(ctx)
}

// trial runs the health checks under the watchdog within the deadline.
func (e *Engine) trial(ctx context.Context, rec *Record) error {
	wd, timeout, err := e.o.Watchdog()
	if err != nil {
		e.log.Warn("trial boot without a watchdog", "err", err)
		wd = nil
	}
	if wd == nil && e.cfg.Watchdog.Device == "" && err == nil {
		e.log.Debug("trial boot without a watchdog: none configured")
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Health.Deadline.D())
	defer cancel()
	petDone := make(chan struct{})
	if wd != nil {
		go func() {
			defer close(petDone)
			KeepAlive(ctx, wd, timeout/3, func(err error) { e.log.Warn("watchdog", "err", err) })
		}()
	} else {
		close(petDone)
	}
	if c, ok := e.o.Health.(*Checker); ok {
		c.Env = hookEnv("health", rec, e.cfg.DataDir)
	}
	err = e.o.Health.Run(ctx)
	cancel()
	<-petDone
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if wd != nil {
		if derr := wd.Disarm(); derr != nil {
			e.log.Warn("watchdog", "err", derr)
		}
	}
	return nil
}

// commit makes the target slot primary, switches packages and files,
// raises the anti-rollback counter and records the installed versions.
// Every part is idempotent, so a commit interrupted by a crash is redone.
func (e *Engine) commit(ctx context.Context, rec *Record) error {
	if rec.Target != "" {
		if err := e.o.Bootloader.Commit(rec.Target); err != nil {
			return fmt.Errorf("commit slot %s: %w", rec.Target, err)
		}
		if err := e.crashAt("after-bootloader-commit"); err != nil {
			return err
		}
		if booted, err := e.o.Booted(); err == nil && booted == rec.Target {
			id, _ := e.o.BootID()
			if err := e.markConfirmed(id); err != nil {
				e.log.Warn("record boot confirmation", "err", err)
			}
		}
	}
	for _, p := range rec.Components {
		var err error
		switch p.Kind {
		case "package":
			err = commitPackage(p.Target)
			if err == nil && p.Link != "" {
				if werr := linkInstallPath(p.Link, filepath.Join(filepath.Dir(p.Target), currentLink)); werr != nil {
					rec.Warnings = append(rec.Warnings, werr.Error())
				}
			}
		case "file":
			if e.isSelf(p) {
				err = e.switchSelf(p)
			} else if p.Stage == "" {
				// Unchanged: the installed file stays.
			} else {
				err = commitFile(p.Stage, p.Target)
			}
		}
		if err != nil {
			return fmt.Errorf("commit component %q: %w", p.Name, err)
		}
		if err := e.crashAt("commit:" + p.Name); err != nil {
			return err
		}
	}
	b := *rec.Bundle
	rec.SecurityVersion = max(rec.SecurityVersion, b.SecurityVersion)
	if rec.Installed == nil {
		rec.Installed = map[string]string{}
	}
	rec.Installed[b.Name] = b.Version
	for _, p := range rec.Components {
		rec.Installed[p.Name] = p.Version
	}
	if rec.Chunks == nil {
		rec.Chunks = map[string]ChunkIndex{}
	}
	for k, v := range rec.Pending {
		rec.Chunks[k] = v
	}
	rec.Current = &b
	rec.Last = &Result{State: Committed, Bundle: b, Warnings: rec.Warnings, Time: e.o.Now().UTC()}
	hookRec := *rec
	clearUpdate(rec)
	if err := e.save(rec, Committed); err != nil {
		return err
	}
	hookRec.State = Committed
	return e.warnHooks(ctx, HookPostCommit, rec, &hookRec)
}

// rolledBack ends an update on the old slot: the target is marked bad so
// the bootloader never tries it again by itself, staged packages and files
// are removed, and the result is recorded.
func (e *Engine) rolledBack(ctx context.Context, rec *Record, reason string) error {
	state := RolledBack
	if rec.State == Written || rec.State == Writing || rec.State == Verifying || rec.State == TrySet {
		state = Abandoned
	}
	if rec.Target != "" {
		bs, err := e.o.Bootloader.State()
		if err == nil && !slices.Contains(bs.Bad, rec.Target) && bs.Primary != rec.Target {
			if err := e.o.Bootloader.MarkBad(rec.Target); err != nil {
				if state == RolledBack {
					return fmt.Errorf("mark slot %s bad: %w", rec.Target, err)
				}
				// Never tried, so never booted: the update still ends.
				rec.Warnings = append(rec.Warnings, fmt.Sprintf("mark slot %s bad: %v", rec.Target, err))
			}
		}
	}
	cleanStaged(rec.Components)
	hookRec := *rec
	hookRec.Reason = reason
	wasFailed := rec.State == Failed
	rec.Last = &Result{State: state, Bundle: *rec.Bundle, Reason: reason, Warnings: rec.Warnings, Time: e.o.Now().UTC()}
	for k := range rec.Pending {
		delete(rec.Chunks, k)
	}
	clearUpdate(rec)
	if err := e.save(rec, state); err != nil {
		return err
	}
	if state == RolledBack {
		// Back on the slot that was committed, and running: confirm it
		// now (its tries refilled) rather than at the next boot.
		if err := e.confirm(rec); err != nil {
			e.log.Warn("confirm the slot rolled back to", "err", err)
		}
	}
	if !wasFailed && state == RolledBack {
		hookRec.State = RolledBack
		return e.warnHooks(ctx, HookOnRollback, rec, &hookRec)
	}
	return nil
}

func clearUpdate(rec *Record) {
	rec.Bundle, rec.Target, rec.From, rec.BootID, rec.Reason = nil, "", "", "", ""
	rec.Components, rec.Pending, rec.Transitions, rec.Warnings = nil, nil, 0, nil
	rec.Offer, rec.Reboot = "", nil
}
