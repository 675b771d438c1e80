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
