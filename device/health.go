package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ErrHealth is wrapped by the error of a failed health check.
var ErrHealth = errors.New("device: health check failed")

// Checker runs the health checks of a trial boot.
type Checker struct {
	Dir        string        // health.d: executables, lexical order
	Timeout    time.Duration // per executable
	HTTP       []HTTPCheck
	Units      []string // systemd units that must be active
	Systemctl  string   // systemctl binary
	MinUptime  time.Duration
	UptimeFile string        // /proc/uptime
	Retry      time.Duration // pause between rounds; default 2s
	Env        []string      // context for executables
	run        runner
}

// NewChecker builds a Checker from the config.
func NewChecker(c *Config) (*Checker, error) {
	cred, err := credential(c.User)
	if err != nil {
		return nil, err
	}
	h := c.Health
	return &Checker{
		Dir: h.Dir, Timeout: h.Timeout.D(), HTTP: h.HTTP, Units: h.Units, Systemctl: h.Systemctl,
		MinUptime: h.MinUptime.D(), UptimeFile: h.UptimeFile,
		run: runner{cred: cred, timeout: h.Timeout.D()},
	}, nil
}

// Run runs every check in rounds until one round passes entirely or ctx
// ends (the overall health deadline); then it returns the last failure,
// which names the check. The minimum uptime is waited for, not failed.
func (c *Checker) Run(ctx context.Context) error {
	retry := c.Retry
	if retry <= 0 {
		retry = 2 * time.Second
	}
	var last error
	for {
		err := c.round(ctx)
		if err == nil {
			return nil
		}
		if cutShort(ctx) && last != nil {
			// The deadline cut this round short; the previous round's
			// failure is the one that says what is wrong.
			return last
		}
		last = err
		select {
		case <-ctx.Done():
			return last
		case <-time.After(retry):
		}
	}
}

// cutShort reports whether ctx's deadline has passed. A socket deadline
// taken from ctx can fire a moment before ctx itself reports it, so the
// clock is asked as well as ctx.Err.
func cutShort(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// round runs each check once: uptime, units, HTTP, executables.
func (c *Checker) round(ctx context.Context) error {
	if c.MinUptime > 0 {
		up, err := readUptime(c.UptimeFile)
		if err != nil {
			return fmt.Errorf("%w: uptime: %v", ErrHealth, err)
		}
		if up < c.MinUptime {
			return fmt.Errorf("%w: uptime %v below minimum %v", ErrHealth, up.Truncate(time.Second), c.MinUptime)
		}
	}
	for _, u := range c.Units {
		if err := c.unitActive(ctx, u); err != nil {
			return err
		}
	}
	for _, h := range c.HTTP {
		if err := c.httpCheck(ctx, h); err != nil {
			return err
		}
	}
	paths, err := executables(c.Dir)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrHealth, err)
	}
	r := c.run
	if r.timeout == 0 {
		r.timeout = c.Timeout
	}
	if r.timeout == 0 {
		r.timeout = 30 * time.Second
	}
	for _, p := range paths {
		if res := r.run(ctx, p, c.Env); res.Err != "" {
			out := strings.TrimSpace(res.Output)
			if len(out) > 200 {
				out = out[len(out)-200:]
			}
			return fmt.Errorf("%w: %s: %s %s", ErrHealth, p, res.Err, out)
		}
	}
	return nil
}

func (c *Checker) unitActive(ctx context.Context, unit string) error {
	bin := c.Systemctl
	if bin == "" {
		bin = "systemctl"
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "is-active", "--", unit).Output()
	state := strings.TrimSpace(string(out))
	if err != nil || state != "active" {
		if state == "" && err != nil {
			state = err.Error()
		}
		return fmt.Errorf("%w: unit %s is %s", ErrHealth, unit, state)
	}
	return nil
}

func (c *Checker) httpCheck(ctx context.Context, h HTTPCheck) error {
	timeout := h.Timeout.D()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := HTTPGet(ctx, h.URL, timeout)
	if err != nil {
		return fmt.Errorf("%w: GET %s: %v", ErrHealth, h.URL, err)
	}
	resp.Body.Close()
	want := h.Status
	if want == 0 {
		want = 200
	}
	if resp.Status != want {
		return fmt.Errorf("%w: GET %s: status %d, want %d", ErrHealth, h.URL, resp.Status, want)
	}
	return nil
}

// readUptime parses the first field of /proc/uptime (seconds, fractional).
func readUptime(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty", path)
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil || secs < 0 {
		return 0, fmt.Errorf("%s: bad uptime %q", path, f[0])
	}
	return time.Duration(secs * float64(time.Second)), nil
}
