package device

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/autopatcher/autopatcher/transport"
)

// DefaultConfigPath is where autopatchd looks for its configuration.
const DefaultConfigPath = "/etc/autopatcher/device.yaml"

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("device: bad config")

// Config is the device configuration (device.yaml). doc.go documents every
// field with its default.
type Config struct {
	DataDir    string            `yaml:"data_dir"`
	Slots      string            `yaml:"slots"`
	HardwareID string            `yaml:"hardware_id"`
	FileRoot   string            `yaml:"file_root"`
	Packages   string            `yaml:"packages"`
	Installed  map[string]string `yaml:"installed"`
	Trust      TrustConfig       `yaml:"trust"`
	Health     HealthConfig      `yaml:"health"`
	Watchdog   WatchdogConfig    `yaml:"watchdog"`
	Hooks      HooksConfig       `yaml:"hooks"`
	Reboot     RebootConfig      `yaml:"reboot"`
	Verify     string            `yaml:"verify"`
	Install    InstallConfig     `yaml:"install"`
	User       string            `yaml:"user"`
	SelfUpdate SelfUpdate        `yaml:"self_update"`
	Hub        HubConfig         `yaml:"hub"`
	// Capabilities the daemon keeps (Linux, when run as root); ["all"] keeps every one.
	Capabilities []string `yaml:"capabilities"`
}

// HubConfig connects the daemon to a hub over MQTT. No servers: no hub.
type HubConfig struct {
	Servers        []string `yaml:"servers"`
	DeviceID       string   `yaml:"device_id"`
	CA             string   `yaml:"ca"`
	Cert           string   `yaml:"cert"`
	Key            string   `yaml:"key"`
	ServerName     string   `yaml:"server_name"`
	Username       string   `yaml:"username"`
	PasswordFile   string   `yaml:"password_file"`
	AllowPlain     bool     `yaml:"allow_plain"`
	KeepAlive      Duration `yaml:"keep_alive"`
	SessionExpiry  Duration `yaml:"session_expiry"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	Window         int      `yaml:"window"`
	ChunkTimeout   Duration `yaml:"chunk_timeout"`
	MaxRetries     int      `yaml:"max_retries"`
	ProgressEvery  int      `yaml:"progress_every"`
	Poll           Duration `yaml:"poll"`
	HelloInterval  Duration `yaml:"hello_interval"`
}

// Enabled reports whether a hub is configured.
func (h *HubConfig) Enabled() bool { return len(h.Servers) > 0 }

// TrustConfig names the keys bundles must be signed with.
type TrustConfig struct {
	Keys      []string `yaml:"keys"`
	Threshold int      `yaml:"threshold"`
	Revoked   []string `yaml:"revoked"`
}

// HealthConfig lists the checks a trial boot must pass.
type HealthConfig struct {
	Deadline   Duration    `yaml:"deadline"`
	Dir        string      `yaml:"dir"`
	Timeout    Duration    `yaml:"timeout"`
	HTTP       []HTTPCheck `yaml:"http"`
	Units      []string    `yaml:"units"`
	Systemctl  string      `yaml:"systemctl"`
	MinUptime  Duration    `yaml:"min_uptime"`
	UptimeFile string      `yaml:"uptime_file"`
}

// HTTPCheck is one HTTP GET health check.
type HTTPCheck struct {
	URL     string   `yaml:"url"`
	Status  int      `yaml:"status"`
	Timeout Duration `yaml:"timeout"`
}

// WatchdogConfig says which watchdog guards a trial boot.
type WatchdogConfig struct {
	Device  string   `yaml:"device"`
	Timeout Duration `yaml:"timeout"`
	Systemd *bool    `yaml:"systemd"`
}

// HooksConfig locates the hook directories.
type HooksConfig struct {
	Dir     string   `yaml:"dir"`
	Timeout Duration `yaml:"timeout"`
}

// RebootConfig is the reboot policy after an image has been written.
type RebootConfig struct {
	Policy   string   `yaml:"policy"`
	Window   string   `yaml:"window"`
	TimeZone string   `yaml:"time_zone"`
	Command  []string `yaml:"command"`
}

// InstallConfig constrains offline installs.
type InstallConfig struct {
	URLAllowlist []string `yaml:"url_allowlist"`
	Timeout      Duration `yaml:"timeout"`
}

// SelfUpdate configures the update of autopatchd itself when it is
// installed as a package.
type SelfUpdate struct {
	Binary   string   `yaml:"binary"`
	Deadline Duration `yaml:"deadline"`
}

// Reboot policies.
const (
	RebootNow    = "now"
	RebootWindow = "window"
	RebootHub    = "hub"
)

// Read-back verification modes.
const (
	VerifyAuto = "auto"
	VerifyOn   = "on"
	VerifyOff  = "off"
)

// Duration is a time.Duration that reads "90s", "5m" or a number of seconds from YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration(v)
		return nil
	}
	var secs int64
	if _, err := fmt.Sscanf(s, "%d", &secs); err == nil && fmt.Sprint(secs) == s {
		*d = Duration(time.Duration(secs) * time.Second)
		return nil
	}
	return fmt.Errorf("line %d: bad duration %q", n.Line, s)
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// DefaultConfig returns the configuration used for every field the file omits.
func DefaultConfig() *Config {
	return &Config{
		DataDir:  "/var/lib/autopatcher",
		Slots:    "/etc/autopatcher/slots.yaml",
		FileRoot: "/",
		Trust:    TrustConfig{Keys: []string{"/etc/autopatcher/keys/vendor.pub"}, Threshold: 1},
		Health: HealthConfig{
			Deadline:   Duration(5 * time.Minute),
			Dir:        "/etc/autopatcher/health.d",
			Timeout:    Duration(30 * time.Second),
			Systemctl:  "systemctl",
			UptimeFile: "/proc/uptime",
		},
		Watchdog: WatchdogConfig{Device: "/dev/watchdog", Timeout: Duration(60 * time.Second)},
		Hooks:    HooksConfig{Dir: "/etc/autopatcher/hooks", Timeout: Duration(60 * time.Second)},
		Reboot:   RebootConfig{Policy: RebootNow, TimeZone: "Local", Command: []string{"systemctl", "reboot"}},
		Verify:   VerifyAuto,
		Install:  InstallConfig{Timeout: Duration(30 * time.Minute)},
		SelfUpdate: SelfUpdate{
			Deadline: Duration(2 * time.Minute),
		},
		Capabilities: slices.Clone(DefaultCapabilities),
		Hub: HubConfig{
			KeepAlive:      Duration(30 * time.Second),
			SessionExpiry:  Duration(24 * time.Hour),
			ConnectTimeout: Duration(10 * time.Second),
			Window:         16,
			ChunkTimeout:   Duration(10 * time.Second),
			MaxRetries:     32,
			ProgressEvery:  64,
			Poll:           Duration(2 * time.Second),
			HelloInterval:  Duration(15 * time.Minute),
		},
	}
}

// LoadConfig reads a device.yaml; fields it omits keep their defaults.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses device.yaml bytes over DefaultConfig and validates them.
func ParseConfig(b []byte) (*Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate reports the first field with a value that cannot work.
func (c *Config) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, a...))
	}
	if c.DataDir == "" {
		return bad("data_dir", "empty")
	}
	if c.Trust.Threshold < 1 {
		return bad("trust.threshold", "%d, want >= 1", c.Trust.Threshold)
	}
	switch c.Reboot.Policy {
	case RebootNow, RebootHub:
	case RebootWindow:
		if _, err := transport.ParseWindow(c.Reboot.Window, c.Reboot.TimeZone); err != nil {
			return bad("reboot.window", "%v", err)
		}
	default:
		return bad("reboot.policy", "%q, want now, window or hub", c.Reboot.Policy)
	}
	switch c.Verify {
	case VerifyAuto, VerifyOn, VerifyOff:
	default:
		return bad("verify", "%q, want auto, on or off", c.Verify)
	}
	for i, h := range c.Health.HTTP {
		if !strings.HasPrefix(h.URL, "http://") {
			return bad(fmt.Sprintf("health.http[%d].url", i), "%q is not an http:// URL", h.URL)
		}
		if h.Status == 0 {
			c.Health.HTTP[i].Status = 200
		}
		if h.Timeout == 0 {
			c.Health.HTTP[i].Timeout = c.Health.Timeout
		}
	}
	if c.Health.Deadline <= 0 {
		return bad("health.deadline", "must be positive")
	}
	if !keepsAll(c.Capabilities) {
		if _, err := capMask(c.Capabilities); err != nil {
			return err
		}
	}
	if h := c.Hub; h.Enabled() {
		for i, u := range h.Servers {
			if !strings.HasPrefix(u, "mqtts://") && !strings.HasPrefix(u, "mqtt://") {
				return bad(fmt.Sprintf("hub.servers[%d]", i), "%q, want mqtts://HOST:PORT (or mqtt:// with allow_plain)", u)
			}
			if strings.HasPrefix(u, "mqtt://") && !h.AllowPlain {
				return bad(fmt.Sprintf("hub.servers[%d]", i), "%q is plain TCP and hub.allow_plain is off", u)
			}
		}
		if (h.Cert == "") != (h.Key == "") {
			return bad("hub.cert", "cert and key must both be set")
		}
		if h.Window < 1 || h.Window > 256 {
			return bad("hub.window", "%d, want 1..256", h.Window)
		}
		if h.ProgressEvery < 1 {
			return bad("hub.progress_every", "%d, want >= 1", h.ProgressEvery)
		}
		if h.ChunkTimeout <= 0 || h.Poll <= 0 || h.ConnectTimeout <= 0 {
			return bad("hub", "chunk_timeout, poll and connect_timeout must be positive")
		}
	}
	if c.Watchdog.Timeout < Duration(time.Second) {
		return bad("watchdog.timeout", "%v, want >= 1s", c.Watchdog.Timeout.D())
	}
	return nil
}
