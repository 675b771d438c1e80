package device

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDeviceWatchdog(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "watchdog")
	os.WriteFile(dev, nil, 0o600)
	w, timeout, err := OpenWatchdog(WatchdogConfig{Device: dev, Timeout: Duration(30 * time.Second)}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if timeout != 30*time.Second {
		t.Errorf("timeout %v, want 30s", timeout)
	}
	for range 3 {
		if err := w.Pet(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dev); string(b) != "111V" {
		t.Errorf("device saw %q, want three pets and the magic close", b)
	}
	if _, _, err := OpenWatchdog(WatchdogConfig{Device: filepath.Join(t.TempDir(), "none")}, func(string) string { return "" }); err == nil {
		t.Errorf("missing device: want an error")
	}
}

func TestSystemdWatchdog(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	env := map[string]string{"WATCHDOG_USEC": "6000000", "NOTIFY_SOCKET": sock}
	w, timeout, err := OpenWatchdog(WatchdogConfig{Device: "/nonexistent"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if timeout != 6*time.Second {
		t.Errorf("timeout %v, want 6s", timeout)
	}
	if err := Notify(sock, "READY=1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { KeepAlive(ctx, w, time.Millisecond, nil); close(done) }()
	var got []string
	buf := make([]byte, 64)
	for len(got) < 3 {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(buf[:n]))
	}
	cancel()
	<-done
	if got[0] != "READY=1" || got[1] != "WATCHDOG=1" || got[2] != "WATCHDOG=1" {
		t.Errorf("datagrams %q, want READY=1 then WATCHDOG=1", strings.Join(got, ","))
	}
	off := false
	if _, _, err := OpenWatchdog(WatchdogConfig{Device: "/nonexistent", Systemd: &off}, func(k string) string { return env[k] }); err == nil {
		t.Errorf("systemd: false must use the device (missing here)")
	}
	if err := Notify("", "READY=1"); err != nil {
		t.Errorf("Notify without a socket = %v, want a no-op", err)
	}
}

func TestNoWatchdogConfigured(t *testing.T) {
	w, _, err := OpenWatchdog(WatchdogConfig{Device: ""}, func(string) string { return "" })
	if w != nil || err != nil {
		t.Errorf("OpenWatchdog without a device = %v, %v; want none and no error", w, err)
	}
}
