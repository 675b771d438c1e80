package device

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lock takes an exclusive lock on the data dir, so that the daemon and the
// command line never run the engine at the same time.
func (e *Engine) lock() (func(), error) {
	if err := os.MkdirAll(e.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(e.cfg.DataDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	return func() { f.Close() }, nil
}
