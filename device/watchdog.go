package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Watchdog guards a trial boot: if the daemon stops petting it, the board resets.
type Watchdog interface {
	Pet() error
	// Disarm stops the watchdog where the driver allows it (magic close).
	Disarm() error
}

// ErrWatchdog is wrapped by watchdog errors.
var ErrWatchdog = errors.New("device: watchdog")

// OpenWatchdog opens the watchdog the config and environment call for:
// systemd's (sd_notify) when WATCHDOG_USEC and NOTIFY_SOCKET are set and
// watchdog.systemd is not false, else the device (default /dev/watchdog)
// with the configured timeout; with no device configured it returns a nil
// Watchdog and no error. getenv is os.Getenv outside tests.
func OpenWatchdog(c WatchdogConfig, getenv func(string) string) (Watchdog, time.Duration, error) {
	useSystemd := c.Systemd == nil || *c.Systemd
	if usec := getenv("WATCHDOG_USEC"); useSystemd && usec != "" && getenv("NOTIFY_SOCKET") != "" {
		us, err := strconv.ParseInt(usec, 10, 64)
		if err != nil || us <= 0 {
			return nil, 0, fmt.Errorf("%w: WATCHDOG_USEC=%q", ErrWatchdog, usec)
		}
		return &SystemdWatchdog{Socket: getenv("NOTIFY_SOCKET")}, time.Duration(us) * time.Microsecond, nil
	}
	if c.Systemd != nil && *c.Systemd {
		return nil, 0, fmt.Errorf("%w: watchdog.systemd is on but WATCHDOG_USEC or NOTIFY_SOCKET is not set", ErrWatchdog)
	}
	if c.Device == "" {
		return nil, 0, nil // no watchdog configured
	}
	w, err := openDevice(c.Device, c.Timeout.D())
	if err != nil {
		return nil, 0, err
	}
	return w, c.Timeout.D(), nil
}

// KeepAlive pets w every interval until ctx ends. Errors go to report.
func KeepAlive(ctx context.Context, w Watchdog, interval time.Duration, report func(error)) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := w.Pet(); err != nil && report != nil {
			report(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SystemdWatchdog talks to systemd's service watchdog over the notify socket.
type SystemdWatchdog struct {
	Socket string // $NOTIFY_SOCKET; a leading '@' is the abstract namespace
}

// Pet sends WATCHDOG=1.
func (s *SystemdWatchdog) Pet() error { return Notify(s.Socket, "WATCHDOG=1") }

// Disarm does nothing: systemd's watchdog guards the daemon as long as it runs.
func (s *SystemdWatchdog) Disarm() error { return nil }

// Notify sends one sd_notify datagram ("READY=1", "WATCHDOG=1", "STATUS=...")
// to socket. An empty socket (not run by systemd) is a no-op.
func Notify(socket, state string) error {
	if socket == "" {
		return nil
	}
	name := socket
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("%w: notify: %v", ErrWatchdog, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("%w: notify: %v", ErrWatchdog, err)
	}
	return nil
}

// NotifyEnv sends state to $NOTIFY_SOCKET if the daemon runs under systemd.
func NotifyEnv(state string) error { return Notify(os.Getenv("NOTIFY_SOCKET"), state) }
