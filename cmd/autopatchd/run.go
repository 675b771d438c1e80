package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/autopatcher/autopatcher/device"
	"github.com/autopatcher/autopatcher/slots"
	"github.com/autopatcher/autopatcher/slots/sim"
)

const usage = `usage: autopatchd [-c CONFIG] COMMAND [ARGS]

commands:
  run                              the daemon: finish what the state says, then serve
  install [--dry-run] [--json] FILE|URL|-
                                   verify and install a bundle (URL only from allowed hosts)
  status [--json]                  slots, versions, trial state, last result
  mark-good                        commit the running trial now
  mark-bad                         fail the running trial and reboot into the old slot
  rollback                         cancel the update under way
  reboot                           reboot into the installed update (reboot policy "hub")
  self-check                       print "ok" if this binary can run the device (self-update)
`

// memoryLimit is the default soft memory limit of the Go runtime.
const memoryLimit = 10 << 20

// errUsage is returned for bad command lines.
var errUsage = errors.New("bad usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("autopatchd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", device.DefaultConfigPath, "config file")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := device.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	if os.Getenv("GOMEMLIMIT") == "" {
		// Installs stream through a few small buffers; a soft limit keeps the
		// garbage of a long install from growing the heap.
		debug.SetMemoryLimit(memoryLimit)
	}
	e, err := newEngine(cfg, *cfgPath, log, cmd == "run")
	if err != nil {
		return err
	}
	switch cmd {
	case "run":
		return runDaemon(ctx, e, cfg, log)
	case "install":
		return install(ctx, e, cfg, rest, stdout, stderr)
	case "status":
		return status(e, rest, stdout)
	case "mark-good":
		return report(stdout)(e.MarkGood(ctx))
	case "mark-bad":
		return report(stdout)(e.MarkBad(ctx))
	case "rollback":
		return report(stdout)(e.Rollback(ctx))
	case "reboot":
		return e.RebootNow(ctx)
	case "self-check":
		// A new binary proves it runs here before a self-update switches to it.
		if _, err := e.Status(); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "ok")
		return nil
	}
	fs.Usage()
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

func newEngine(cfg *device.Config, cfgPath string, log *slog.Logger, daemon bool) (*device.Engine, error) {
	sc, err := slots.LoadConfig(cfg.Slots)
	if err != nil {
		return nil, err
	}
	boot, err := slots.Open(sc)
	if err != nil {
		return nil, err
	}
	o := device.Options{Slots: sc, Bootloader: boot, Logger: log, ConfigPath: cfgPath}
	if s, ok := boot.(*sim.Bootloader); ok {
		// A simulated board: its boots are the simulator's, not the kernel's.
		o.BootID = func() (string, error) {
			boots, err := s.Boots()
			if err != nil || len(boots) == 0 {
				return "0", err
			}
			return strconv.Itoa(boots[len(boots)-1].N), nil
		}
		r := &simRebooter{s: s, log: log}
		o.Rebooter = r
		e, err := device.New(cfg, o)
		if daemon {
			r.e = e
		}
		return e, err
	}
	return device.New(cfg, o)
}

// simRebooter power-cycles a simulated board. The daemon keeps running, so
// it then does what a daemon starting on the new boot does: ConfirmBoot and
// Resume (the trial), once the engine's lock is free.
type simRebooter struct {
	s   *sim.Bootloader
	e   *device.Engine
	log *slog.Logger
}

func (r *simRebooter) Reboot(context.Context) error {
	if _, err := r.s.Reboot(); err != nil {
		return err
	}
	if r.e != nil {
		go func() {
			ctx := context.Background()
			if err := r.e.ConfirmBoot(ctx); err != nil {
				r.log.Error("confirm boot", "err", err)
			}
			if _, err := r.e.Resume(ctx); err != nil {
				r.log.Error("update engine", "err", err)
			}
		}()
	}
	return nil
}

func runDaemon(ctx context.Context, e *device.Engine, cfg *device.Config, log *slog.Logger) error {
	if os.Geteuid() == 0 {
		// Before any goroutine of ours starts: what the daemon and its hooks
		// never need is gone for good.
		if err := device.DropPrivileges(cfg.Capabilities); err != nil {
			log.Warn("drop privileges", "err", err)
		} else {
			log.Debug("privileges dropped", "keep", strings.Join(cfg.Capabilities, ","))
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	agentDone := make(chan struct{})
	if cfg.Hub.Enabled() {
		a, err := device.NewAgent(e, cfg.Hub, device.AgentOptions{Logger: log, Version: version()})
		if err != nil {
			return err
		}
		go func() {
			defer close(agentDone)
			if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("hub agent stopped", "err", err)
			}
		}()
	} else {
		close(agentDone)
	}
	defer func() { cancel(); <-agentDone }()
	if err := device.NotifyEnv("READY=1"); err != nil {
		log.Warn("sd_notify", "err", err)
	}
	if usec, _ := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); usec > 0 {
		wd := &device.SystemdWatchdog{Socket: os.Getenv("NOTIFY_SOCKET")}
		go device.KeepAlive(ctx, wd, time.Duration(usec)*time.Microsecond/2, func(err error) { log.Warn("watchdog", "err", err) })
	}
	log.Info("autopatchd running")
	err := e.Run(ctx, 30*time.Second)
	if errors.Is(err, device.ErrRestart) {
		exe, xerr := os.Executable()
		if xerr != nil {
			return xerr
		}
		log.Info("restarting after a self-update")
		return syscall.Exec(exe, os.Args, os.Environ())
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// version is the module version of the binary, reported to the hub.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

func report(stdout io.Writer) func(string, error) error {
	return func(status string, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, status)
		return nil
	}
}

func install(ctx context.Context, e *device.Engine, cfg *device.Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dry := fs.Bool("dry-run", false, "verify and plan only; change nothing")
	asJSON := fs.Bool("json", false, "print the outcome as JSON")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: install takes one FILE, URL or -", errUsage)
	}
	src := fs.Arg(0)
	var r io.Reader
	switch {
	case src == "-":
		r = os.Stdin
	case strings.HasPrefix(src, "http://"):
		body, err := fetch(ctx, cfg, src)
		if err != nil {
			return err
		}
		defer body.Close()
		r = body
	default:
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	opts := device.InstallOptions{DryRun: *dry}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("CI") != "true" {
		bar := &progress{w: stderr}
		opts.Progress = bar.update
		defer bar.done()
	}
	out, err := e.Install(ctx, r, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "%s %s: %s\n", out.Bundle.Name, out.Bundle.Version, out.Status)
	for i, it := range out.Plan {
		where := it.Target
		if it.Slot != "" {
			where = fmt.Sprintf("%s slot %s (%s)", it.Class, it.Slot, it.Target)
		}
		if it.Unchanged {
			where += " (unchanged: already installed, not written)"
		}
		fmt.Fprintf(stdout, "  %d. %-16s %-7s %-10s %12d bytes -> %s\n", i+1, it.Component, it.Kind, it.Version, it.Size, where)
	}
	return nil
}

// fetch GETs a bundle from an allowlisted host.
func fetch(ctx context.Context, cfg *device.Config, raw string) (io.ReadCloser, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("install from URL: %w", err)
	}
	if !slices.Contains(cfg.Install.URLAllowlist, u.Hostname()) && !slices.Contains(cfg.Install.URLAllowlist, u.Host) {
		return nil, fmt.Errorf("install from URL: host %q is not in install.url_allowlist", u.Host)
	}
	resp, err := device.HTTPGet(ctx, raw, cfg.Install.Timeout.D())
	if err != nil {
		return nil, fmt.Errorf("install from URL: %w", err)
	}
	if resp.Status != 200 {
		resp.Body.Close()
		return nil, fmt.Errorf("install from URL: GET %s: status %d", raw, resp.Status)
	}
	return resp.Body, nil
}

func status(e *device.Engine, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	st, err := e.Status()
	if err != nil {
		return err
	}
	st.Download = e.LastDownload()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	writeStatus(stdout, st)
	return nil
}

// writeStatus prints st for people.
func writeStatus(stdout io.Writer, st device.Status) {
	fmt.Fprintf(stdout, "state:            %s\n", st.State)
	fmt.Fprintf(stdout, "booted:           %s (primary %s", st.Booted, st.Boot.Primary)
	if st.Boot.Pending != "" {
		fmt.Fprintf(stdout, ", next boot tries %s", st.Boot.Pending)
	}
	if st.Boot.Trial != "" {
		fmt.Fprintf(stdout, ", trial of %s", st.Boot.Trial)
	}
	if len(st.Boot.Bad) > 0 {
		fmt.Fprintf(stdout, ", bad %s", strings.Join(st.Boot.Bad, " "))
	}
	fmt.Fprintln(stdout, ")")
	if st.Current != nil {
		fmt.Fprintf(stdout, "installed bundle: %s %s\n", st.Current.Name, st.Current.Version)
	}
	fmt.Fprintf(stdout, "security version: %d\n", st.SecurityVersion)
	if st.Bundle != nil {
		fmt.Fprintf(stdout, "under way:        %s %s to slot %s\n", st.Bundle.Name, st.Bundle.Version, st.Target)
	}
	if st.Last != nil {
		fmt.Fprintf(stdout, "last result:      %s %s %s at %s", st.Last.State, st.Last.Bundle.Name, st.Last.Bundle.Version, st.Last.Time.Format(time.RFC3339))
		if st.Last.Reason != "" {
			fmt.Fprintf(stdout, ": %s", st.Last.Reason)
		}
		fmt.Fprintln(stdout)
	}
	if d := st.Download; d != nil {
		fmt.Fprintf(stdout, "last download:    %s %s at %s: %s\n", d.Bundle.Name, d.Bundle.Version, d.Time.Format(time.RFC3339), d)
	}
	names := make([]string, 0, len(st.Installed))
	for n := range st.Installed {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(stdout, "  %-16s %s\n", n, st.Installed[n])
	}
}

// progress draws a one-line progress bar on a terminal.
type progress struct {
	w     io.Writer
	last  time.Time
	name  string
	drawn bool
}

func (p *progress) update(component string, done, total uint64) {
	now := time.Now()
	if component == p.name && now.Sub(p.last) < 200*time.Millisecond && done != total {
		return
	}
	p.name, p.last, p.drawn = component, now, true
	pct := 100.0
	if total > 0 {
		pct = float64(done) * 100 / float64(total)
	}
	const width = 30
	n := int(pct * width / 100)
	fmt.Fprintf(p.w, "\r%-16s [%s%s] %5.1f%% %d/%d MiB", component, strings.Repeat("=", n), strings.Repeat(" ", width-n), pct, done>>20, total>>20)
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
