//go:build !linux

package device

import (
	"fmt"
	"time"
)

func openDevice(path string, timeout time.Duration) (Watchdog, error) {
	return nil, fmt.Errorf("%w: %s: hardware watchdogs are only supported on Linux", ErrWatchdog, path)
}
