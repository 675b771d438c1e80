package device

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestExampleConfigParses(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "examples", "device.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HardwareID != "acme-gateway-v2" || c.Health.Deadline.D() != 5*time.Minute || c.Health.HTTP[0].Status != 200 {
		t.Errorf("example config = %+v", c)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	if c.DataDir != d.DataDir || c.Watchdog.Device != "/dev/watchdog" || c.Reboot.Policy != RebootNow || c.Verify != VerifyAuto {
		t.Errorf("empty config = %+v, want defaults", c)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
	}{
		{"unknown field", "datadir: /x\n"},
		{"bad policy", "reboot: {policy: later}\n"},
		{"bad window", "reboot: {policy: window, window: '25:00-26:00'}\n"},
		{"bad zone", "reboot: {policy: window, window: '02:00-03:00', time_zone: Mars/Base}\n"},
		{"bad verify", "verify: maybe\n"},
		{"hub plain without allow_plain", "hub: {servers: ['mqtt://127.0.0.1:1883']}\n"},
		{"hub bad scheme", "hub: {servers: ['http://hub']}\n"},
		{"hub cert without key", "hub: {servers: ['mqtts://hub'], cert: /c.pem}\n"},
		{"hub window", "hub: {servers: ['mqtts://hub'], window: 0}\n"},
		{"bad duration", "health: {deadline: soon}\n"},
		{"https check", "health: {http: [{url: 'https://x/'}]}\n"},
		{"threshold", "trust: {threshold: 0}\n"},
		{"watchdog timeout", "watchdog: {timeout: 0s}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseConfig([]byte(tc.yaml)); !errors.Is(err, ErrConfig) {
				t.Errorf("ParseConfig(%q) = %v, want ErrConfig", tc.yaml, err)
			}
		})
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadConfig(missing) = %v", err)
	}
}

func TestDurationSeconds(t *testing.T) {
	c, err := ParseConfig([]byte("health: {deadline: 90, timeout: 1m30s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Health.Deadline.D() != 90*time.Second || c.Health.Timeout.D() != 90*time.Second {
		t.Errorf("deadline %v timeout %v, want 90s", c.Health.Deadline.D(), c.Health.Timeout.D())
	}
}

func TestWindow(t *testing.T) {
	utc := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04 Mon", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		spec string
		at   string
		want bool
	}{
		{"02:00-04:00", "2026-11-23 02:00 Mon", true},
		{"02:00-04:00", "2026-11-23 03:59 Mon", true},
		{"02:00-04:00", "2026-11-23 04:00 Mon", false},
		{"02:00-04:00", "2026-11-23 01:59 Mon", false},
		{"23:00-01:00", "2026-11-23 23:30 Mon", true},
		{"23:00-01:00", "2026-11-24 00:30 Tue", true},
		{"23:00-01:00", "2026-11-24 01:30 Tue", false},
		{"sat,sun 02:00-04:00", "2026-11-22 03:00 Sun", true},
		{"sat,sun 02:00-04:00", "2026-11-23 03:00 Mon", false},
		{"mon-fri 02:00-04:00", "2026-11-27 03:00 Fri", true},
		{"mon-fri 02:00-04:00", "2026-11-28 03:00 Sat", false},
		{"0 3 * * 1-5 2h", "2026-11-23 04:59 Mon", true},
		{"0 3 * * 1-5 2h", "2026-11-23 05:00 Mon", false},
		{"0 3 * * 1-5 2h", "2026-11-22 03:30 Sun", false},
		{"*/15 * * * * 5m", "2026-11-22 10:47 Sun", true},
		{"*/15 * * * * 5m", "2026-11-22 10:50 Sun", false},
	}
	for _, tc := range tests {
		w, err := ParseWindow(tc.spec, "UTC")
		if err != nil {
			t.Fatalf("ParseWindow(%q): %v", tc.spec, err)
		}
		if got := w.Contains(utc(tc.at)); got != tc.want {
			t.Errorf("%q.Contains(%s) = %v, want %v", tc.spec, tc.at, got, tc.want)
		}
	}
	w, _ := ParseWindow("02:00-04:00", "Europe/Berlin")
	next, ok := w.Next(utc("2026-11-23 12:00 Mon"))
	if want := utc("2026-11-24 01:00 Tue"); !ok || !next.Equal(want) {
		t.Errorf("Next = %v, %v; want %v (02:00 in Berlin)", next, ok, want)
	}
	for _, bad := range []string{"", "2-4", "02:00-02:00", "xyz 02:00-04:00", "61 * * * * 1h", "0 3 * * * forever"} {
		if _, err := ParseWindow(bad, "UTC"); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
}
