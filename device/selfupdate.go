package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/autopatcher/autopatcher/slots"
)

// Self-update, for devices where autopatchd is installed as a file rather
// than inside the A/B image. A bundle updates it with a file component
// whose install path is self_update.binary:
//
//  1. The new binary is written beside the old one (<binary>.ap-new) like
//     any file component, and before the install counts as written it must
//     run: "<new> -c <config> self-check" has to print "ok" within
//     self_update.deadline, or the install is abandoned.
//  2. At commit the old binary is kept as <binary>.ap-old (hard link), the
//     new one renamed over <binary>, and self-update.json written to the
//     data dir with a deadline.
//  3. The daemon re-executes itself (Run returns ErrRestart). The new
//     process confirms at start (ConfirmSelfUpdate): the old copy and the
//     marker are removed. If it comes up after the deadline, or is not the
//     new binary, the old binary is restored and run again. If it never
//     comes up, the systemd unit's ExecStopPost restores <binary>.ap-old.

// ErrRestart is returned by Run when the daemon's own binary was replaced
// and the process must re-execute itself.
var ErrRestart = errors.New("device: autopatchd binary replaced; restart")

// ErrSelfCheck means a new autopatchd binary did not pass its self-check.
var ErrSelfCheck = errors.New("device: new autopatchd binary failed its self-check")

const (
	selfUpdateFile = "self-update.json"
	oldExt         = ".ap-old"
)

type selfUpdateMarker struct {
	Binary   string    `json:"binary"`
	Old      string    `json:"old"`
	Version  string    `json:"version"`
	Deadline time.Time `json:"deadline"`
}

// isSelf reports whether a file component installs the daemon's own binary.
func (e *Engine) isSelf(p Progress) bool {
	return p.Kind == "file" && e.cfg.SelfUpdate.Binary != "" &&
		filepath.Clean(p.Target) == filepath.Clean(e.selfBinary())
}

// selfBinary is self_update.binary below file_root.
func (e *Engine) selfBinary() string {
	return filepath.Join(e.cfg.FileRoot, strings.TrimPrefix(e.cfg.SelfUpdate.Binary, "/"))
}

// selfCheck runs the staged binary's self-check.
func (e *Engine) selfCheck(ctx context.Context, stage string) error {
	if err := os.Chmod(stage, 0o755); err != nil {
		return fmt.Errorf("%w: %v", ErrSelfCheck, err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.SelfUpdate.Deadline.D())
	defer cancel()
	args := []string{"self-check"}
	if e.o.ConfigPath != "" {
		args = []string{"-c", e.o.ConfigPath, "self-check"}
	}
	out, err := exec.CommandContext(ctx, stage, args...).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		return fmt.Errorf("%w: %s: %v: %.200s", ErrSelfCheck, stage, err, out)
	}
	return nil
}

// switchSelf replaces the binary by the staged one, keeping the old copy,
// and writes the marker. It is idempotent.
func (e *Engine) switchSelf(p Progress) error {
	old := p.Target + oldExt
	if _, err := os.Stat(p.Stage); err == nil {
		_ = os.Remove(old)
		if err := os.Link(p.Target, old); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("self-update: keep old binary: %w", err)
		}
	}
	if err := commitFile(p.Stage, p.Target); err != nil {
		return fmt.Errorf("self-update: %w", err)
	}
	if err := os.Chmod(p.Target, 0o755); err != nil {
		return fmt.Errorf("self-update: %w", err)
	}
	m := selfUpdateMarker{Binary: p.Target, Old: old, Version: p.Version, Deadline: e.o.Now().Add(e.cfg.SelfUpdate.Deadline.D()).UTC()}
	b, _ := json.Marshal(m)
	if err := slots.ReplaceFile(filepath.Join(e.cfg.DataDir, selfUpdateFile), b, 0o600, nil); err != nil {
		return fmt.Errorf("self-update: %w", err)
	}
	return nil
}

// BinaryReplaced reports whether a self-update switched the daemon's binary
// since this process started, so that it must re-execute itself.
func (e *Engine) BinaryReplaced() bool {
	if !e.selfAtStart {
		return false // not running as self_update.binary: never restart
	}
	fi, err := os.Stat(e.selfBinary())
	return err == nil && !os.SameFile(fi, e.exeAtStart)
}

// ConfirmSelfUpdate runs at daemon start. After a self-update it confirms
// the new binary (this process) if it came up within the deadline, else it
// restores the old one and returns ErrRestart.
func (e *Engine) ConfirmSelfUpdate() error {
	path := filepath.Join(e.cfg.DataDir, selfUpdateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var m selfUpdateMarker
	if err != nil || json.Unmarshal(b, &m) != nil || m.Binary == "" {
		e.log.Warn("self-update marker unreadable; removing it", "err", err)
		return os.Remove(path)
	}
	running := e.exeAtStart != nil
	if running {
		fi, err := os.Stat(m.Binary)
		running = err == nil && os.SameFile(fi, e.exeAtStart)
	}
	if running && !e.o.Now().After(m.Deadline) {
		e.log.Info("self-update confirmed", "version", m.Version)
		_ = os.Remove(m.Old)
		return os.Remove(path)
	}
	// Too late, or not the new binary running: put the old one back.
	if _, err := os.Stat(m.Old); err == nil {
		if err := os.Rename(m.Old, m.Binary); err != nil {
			return fmt.Errorf("self-update: restore old binary: %w", err)
		}
		e.log.Warn("self-update not confirmed in time; old binary restored", "version", m.Version)
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return ErrRestart
}
