package device

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/u-root/u-root/pkg/watchdog"
	"golang.org/x/sys/unix"
)

// deviceWatchdog is a /dev/watchdog driver.
type deviceWatchdog struct{ w *watchdog.Watchdog }

// openDevice arms the watchdog at path and sets its timeout. u-root's
// SetTimeout passes nanoseconds to an ioctl that wants seconds, so the
// ioctl is made here. A path that is not a character device (a fake file
// in tests) is accepted without the ioctl.
func openDevice(path string, timeout time.Duration) (Watchdog, error) {
	w, err := watchdog.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v", ErrWatchdog, path, err)
	}
	fi, err := w.File.Stat()
	if err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		secs := int(timeout / time.Second)
		if secs < 1 {
			secs = 1
		}
		if err := unix.IoctlSetPointerInt(int(w.File.Fd()), unix.WDIOC_SETTIMEOUT, secs); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			w.Close()
			return nil, fmt.Errorf("%w: set timeout of %s to %ds: %v", ErrWatchdog, path, secs, err)
		}
	}
	return &deviceWatchdog{w: w}, nil
}

func (d *deviceWatchdog) Pet() error {
	if err := d.w.KeepAlive(); err != nil {
		return fmt.Errorf("%w: keep alive: %v", ErrWatchdog, err)
	}
	return nil
}

func (d *deviceWatchdog) Disarm() error {
	if err := d.w.MagicClose(); err != nil {
		return fmt.Errorf("%w: magic close: %v", ErrWatchdog, err)
	}
	return nil
}
