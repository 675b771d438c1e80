package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots"
)

// Engine errors.
var (
	ErrBusy         = errors.New("device: an update is under way")
	ErrNotInTrial   = errors.New("device: not running a trial boot")
	ErrRunaway      = errors.New("device: too many state transitions")
	ErrNoBootloader = errors.New("device: no bootloader configured")
)

// maxTransitions caps the steps one bundle may take, so a bug or a flapping
// environment cannot loop forever (the update is abandoned or rolled back).
const maxTransitions = 64

// Rebooter restarts the machine.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// HealthChecker decides whether a trial boot is healthy.
type HealthChecker interface {
	Run(ctx context.Context) error
}

// Options are the parts of an Engine that tests and other platforms replace.
// Zero fields take the production defaults.
type Options struct {
	Slots      *slots.Config
	Bootloader slots.Bootloader
	// Booted returns the boot name of the running slot. Default: the
	// bootloader's Booted() if it has one, else the kernel command line.
	Booted func() (string, error)
	// BootID changes on every boot. Default: /proc/sys/kernel/random/boot_id.
	BootID   func() (string, error)
	Rebooter Rebooter
	// Watchdog opens the watchdog for a trial boot and says how often it
	// must be petted at most. Default: OpenWatchdog with the config.
	Watchdog func() (Watchdog, time.Duration, error)
	Health   HealthChecker
	Logger   *slog.Logger
	Now      func() time.Time
	// Trust overrides the trust store of the config (keys loaded from PEM files).
	Trust *bundle.Trust
	// ConfigPath is passed to a new autopatchd binary's self-check.
	ConfigPath string
	// Executable is the running daemon's binary (default os.Executable).
	Executable func() (string, error)

	// crash, when set, is called at every persisted transition and may stop
	// the engine there as a power cut would (power-cut tests).
	crash func(point string) error
	// wrapSlot wraps the writer of an image slot (fault injection, ordering).
	wrapSlot func(component string, w io.Writer) io.Writer
	// onWrite records each component as its write begins.
	onWrite func(component string)
}

// Engine installs bundles and drives trial boots to commit or rollback.
// Every method loads the persisted state under a lock on the data dir, so
// the daemon and the command line can share one device.
type Engine struct {
	cfg         *Config
	o           Options
	store       *Store
	log         *slog.Logger
	hooks       runner
	exeAtStart  os.FileInfo // the running binary, for self-update
	selfAtStart bool        // the running binary is self_update.binary
}

// New builds an engine. Options.Slots and Options.Bootloader are loaded from
// the config (slots.LoadConfig, slots.Open) when nil.
func New(cfg *Config, o Options) (*Engine, error) {
	if o.Slots == nil {
		sc, err := slots.LoadConfig(cfg.Slots)
		if err != nil {
			return nil, err
		}
		o.Slots = sc
	}
	if o.Bootloader == nil {
		b, err := slots.Open(o.Slots)
		if err != nil {
			return nil, err
		}
		o.Bootloader = b
	}
	if o.Booted == nil {
		if b, ok := o.Bootloader.(interface{ Booted() string }); ok {
			o.Booted = func() (string, error) {
				if s := b.Booted(); s != "" {
					return s, nil
				}
				return "", slots.ErrUnknownBooted
			}
		} else {
			o.Booted = o.Slots.ReadBooted
		}
	}
	if o.BootID == nil {
		o.BootID = func() (string, error) {
			b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
			return strings.TrimSpace(string(b)), err
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rebooter == nil {
		o.Rebooter = CommandRebooter(cfg.Reboot.Command)
	}
	if o.Watchdog == nil {
		o.Watchdog = func() (Watchdog, time.Duration, error) { return OpenWatchdog(cfg.Watchdog, os.Getenv) }
	}
	if o.Health == nil {
		c, err := NewChecker(cfg)
		if err != nil {
			return nil, err
		}
		o.Health = c
	}
	cred, err := credential(cfg.User)
	if err != nil {
		return nil, err
	}
	if o.Executable == nil {
		o.Executable = os.Executable
	}
	e := &Engine{
		cfg:   cfg,
		o:     o,
		store: &Store{Dir: cfg.DataDir, crash: o.crash},
		log:   o.Logger,
		hooks: runner{cred: cred, timeout: cfg.Hooks.Timeout.D()},
	}
	if exe, err := o.Executable(); err == nil {
		e.exeAtStart, _ = os.Stat(exe)
		if fi, err := os.Stat(e.selfBinary()); err == nil && cfg.SelfUpdate.Binary != "" && e.exeAtStart != nil {
			e.selfAtStart = os.SameFile(fi, e.exeAtStart)
		}
	}
	return e, nil
}

// LoadTrust reads the trust store named by the config.
func LoadTrust(c TrustConfig) (*bundle.Trust, error) {
	t := &bundle.Trust{Threshold: c.Threshold, Revoked: c.Revoked}
	for _, p := range c.Keys {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("load trust: %w", err)
		}
		k, err := bundle.ReadPublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("load trust %s: %w", p, err)
		}
		t.Keys = append(t.Keys, k)
	}
	if len(t.Keys) == 0 {
		return nil, fmt.Errorf("load trust: %w: trust.keys is empty", ErrConfig)
	}
	return t, nil
}

func (e *Engine) trust() (*bundle.Trust, error) {
	if e.o.Trust != nil {
		return e.o.Trust, nil
	}
	return LoadTrust(e.cfg.Trust)
}

// load reads the state, falling back to the previous copy if the file is
// corrupt (the error is logged once, here, at the top).
func (e *Engine) load() (*Record, error) {
	rec, err := e.store.Load()
	if errors.Is(err, ErrCorruptState) {
		prev, perr := e.store.LoadPrevious()
		if perr != nil {
			return nil, fmt.Errorf("%w (no usable previous copy: %v)", err, perr)
		}
		e.log.Warn("state file corrupt, using the previous copy", "err", err)
		return prev, nil
	}
	return rec, err
}

// save persists rec after moving it to state s.
func (e *Engine) save(rec *Record, s State) error {
	rec.State = s
	return e.store.Save(rec)
}

func (e *Engine) crashAt(point string) error {
	if e.o.crash == nil {
		return nil
	}
	return e.o.crash(point)
}

// packagesDir is where package components are unpacked.
func (e *Engine) packagesDir() string {
	if e.cfg.Packages != "" {
		return e.cfg.Packages
	}
	return filepath.Join(e.cfg.DataDir, "packages")
}

// runHooks runs one hook directory with the record as context.
func (e *Engine) runHooks(ctx context.Context, hook string, rec *Record, stopOnError bool) ([]HookResult, error) {
	dir := filepath.Join(e.cfg.Hooks.Dir, hook)
	res, err := e.hooks.runDir(ctx, dir, hookEnv(hook, rec, e.cfg.DataDir), stopOnError)
	if err != nil && !stopOnError {
		e.log.Warn("hook failed", "hook", hook, "err", err)
	}
	return res, err
}

// warnHooks runs a hook directory whose failures do not stop the update;
// they are recorded in rec.Warnings (and so in the result) and saved.
func (e *Engine) warnHooks(ctx context.Context, hook string, rec, hookRec *Record) error {
	if _, err := e.runHooks(ctx, hook, hookRec, false); err != nil {
		if rec.Last != nil && terminal(rec.State) {
			rec.Last.Warnings = append(rec.Last.Warnings, err.Error())
		} else {
			rec.Warnings = append(rec.Warnings, err.Error())
		}
		return e.store.Save(rec)
	}
	return nil
}

// Status is what `autopatchd status` shows.
type Status struct {
	State           State             `json:"state"`
	Booted          string            `json:"booted"`
	Boot            slots.BootState   `json:"boot"`
	Bundle          *BundleInfo       `json:"bundle,omitempty"`
	Target          string            `json:"target,omitempty"`
	Components      []Progress        `json:"components,omitempty"`
	Current         *BundleInfo       `json:"current,omitempty"`
	Installed       map[string]string `json:"installed,omitempty"`
	SecurityVersion uint64            `json:"security_version"`
	Last            *Result           `json:"last,omitempty"`
	Reason          string            `json:"reason,omitempty"`
	// Download: where the chunks of the last finished download came from.
	// Status leaves it nil (it is read from a file of its own); callers
	// that show it fill it from LastDownload.
	Download *DownloadStats `json:"download,omitempty"`
}

// Status reports the persisted state and the bootloader's view.
func (e *Engine) Status() (Status, error) {
	rec, err := e.load()
	if err != nil {
		return Status{}, err
	}
	return e.status(rec)
}

// status is Status with rec, the record just loaded.
func (e *Engine) status(rec *Record) (Status, error) {
	st := Status{
		State: rec.State, Bundle: rec.Bundle, Target: rec.Target, Components: rec.Components,
		Current: rec.Current, Installed: e.installed(rec), SecurityVersion: rec.SecurityVersion,
		Last: rec.Last, Reason: rec.Reason,
	}
	st.Booted, _ = e.o.Booted()
	var err error
	st.Boot, err = e.o.Bootloader.State()
	if err != nil {
		return st, fmt.Errorf("read bootloader state: %w", err)
	}
	return st, nil
}

// installed merges the configured base versions with the committed ones.
func (e *Engine) installed(rec *Record) map[string]string {
	out := map[string]string{}
	for k, v := range e.cfg.Installed {
		out[k] = v
	}
	for k, v := range rec.Installed {
		out[k] = v
	}
	return out
}

// ChunkIndex returns the chunk table of what slot (boot name) of class holds,
// if it was installed by this engine.
func (e *Engine) ChunkIndex(class, slot string) (ChunkIndex, bool, error) {
	rec, err := e.load()
	if err != nil {
		return ChunkIndex{}, false, err
	}
	ci, ok := rec.Chunks[class+"/"+slot]
	return ci, ok, nil
}
