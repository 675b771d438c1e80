package device

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots"
	"github.com/autopatcher/autopatcher/slots/sim"
)

// rig is a simulated device: a sim bootloader, two file-backed rootfs
// slots, a data dir, hooks and health dirs, and a trust store.
type rig struct {
	t       testing.TB
	dir     string
	cfg     *Config
	slots   *slots.Config
	boot    *sim.Bootloader
	bl      slots.Bootloader // replaces boot as the engine's bootloader when set
	key     crypto.Signer
	trust   *bundle.Trust
	reboots int
	health  HealthChecker
	crash   func(point string) error
	wrap    func(component string, w io.Writer) io.Writer
	order   []string
	mu      sync.Mutex
	now     time.Time
}

const hwID = "board-v1"

func newRig(t testing.TB) *rig {
	t.Helper()
	dir := t.TempDir()
	key, err := bundle.GenerateKey(bundle.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.NewPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	b, err := sim.New(filepath.Join(dir, "sim"))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := slots.ParseConfig([]byte(fmt.Sprintf(`
bootloader:
  type: sim
  sim: {dir: "%[1]s/sim"}
slots:
  rootfs:
    a: {device: "%[1]s/rootfs-a.img", type: file, size: 512M}
    b: {device: "%[1]s/rootfs-b.img", type: file, size: 512M}
`, dir)))
	if err != nil {
		t.Fatal(err)
	}
	// The factory image in slot A.
	if err := os.WriteFile(filepath.Join(dir, "rootfs-a.img"), bytes.Repeat([]byte("factory "), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.HardwareID = hwID
	cfg.FileRoot = filepath.Join(dir, "root")
	cfg.Hooks.Dir = filepath.Join(dir, "hooks")
	cfg.Hooks.Timeout = Duration(10 * time.Second)
	cfg.Health.Dir = filepath.Join(dir, "health.d")
	cfg.Health.Deadline = Duration(5 * time.Second)
	cfg.Watchdog.Device = filepath.Join(dir, "watchdog")
	cfg.Installed = map[string]string{"base": "1.0.0"}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Watchdog.Device, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, dir: dir, cfg: cfg, slots: sc, boot: b, key: key,
		trust: &bundle.Trust{Keys: []bundle.PublicKey{pub}}, health: okHealth{}, now: time.Unix(1_800_000_000, 0)}
}

type okHealth struct{}

func (okHealth) Run(context.Context) error { return nil }

type failHealth struct{}

func (failHealth) Run(context.Context) error {
	return fmt.Errorf("%w: GET http://127.0.0.1/health: status 500", ErrHealth)
}

type rebootRecorder struct{ r *rig }

func (f rebootRecorder) Reboot(context.Context) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.r.reboots++
	return nil
}

// engine is the daemon as it starts after a (simulated) boot.
func (r *rig) engine() *Engine {
	r.t.Helper()
	var bl slots.Bootloader = r.boot
	if r.bl != nil {
		bl = r.bl
	}
	e, err := New(r.cfg, Options{
		Slots:      r.slots,
		Bootloader: bl,
		BootID: func() (string, error) {
			boots, err := r.boot.Boots()
			if err != nil || len(boots) == 0 {
				return "0", err
			}
			return strconv.Itoa(boots[len(boots)-1].N), nil
		},
		Rebooter: rebootRecorder{r},
		Health:   r.health,
		Now:      func() time.Time { return r.now },
		Trust:    r.trust,
		crash:    r.crash,
		wrapSlot: r.wrap,
		onWrite: func(c string) {
			r.mu.Lock()
			r.order = append(r.order, c)
			r.mu.Unlock()
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return e
}

// comp is a component of a test bundle with its payload.
type comp struct {
	c       bundle.Component
	payload []byte
}

func image(name, version string, payload []byte) comp {
	return comp{bundle.Component{Name: name, Kind: bundle.KindImage, Slot: "rootfs", Version: version, Compression: bundle.CompressionZstd}, payload}
}

func pkg(name, version string, files map[string]string) comp {
	return comp{bundle.Component{Name: name, Kind: bundle.KindPackage, Path: name, Version: version, Compression: bundle.CompressionNone}, tarOf(files)}
}

func file(name, version, path string, content []byte) comp {
	return comp{bundle.Component{Name: name, Kind: bundle.KindFile, Path: path, Version: version, Compression: bundle.CompressionNone}, content}
}

func (c comp) dependsOn(deps ...bundle.Dependency) comp {
	c.c.Depends = deps
	return c
}

func tarOf(files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range sortedKeys(files) {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	return buf.Bytes()
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

type spec struct {
	name     string
	version  string
	security uint64
	hw       []string
	expires  int64
	requires []bundle.Dependency
	comps    []comp
	keys     []crypto.Signer
}

// build writes a signed bundle into the rig dir and returns its path.
func (r *rig) build(s spec) string {
	r.t.Helper()
	if s.hw == nil {
		s.hw = []string{hwID}
	}
	if s.name == "" {
		s.name = "os"
	}
	if s.keys == nil {
		s.keys = []crypto.Signer{r.key}
	}
	m := &bundle.Manifest{Name: s.name, Version: s.version, SecurityVersion: s.security, Compatible: s.hw,
		Created: r.now.Unix() - 3600, Expires: s.expires, Severity: bundle.SeverityNormal, Requires: s.requires}
	var payloads []io.Reader
	for _, c := range s.comps {
		m.Components = append(m.Components, c.c)
		payloads = append(payloads, bytes.NewReader(c.payload))
	}
	var out bytes.Buffer
	if err := bundle.Build(context.Background(), &out, m, payloads, s.keys, bundle.BuildOptions{TempDir: r.dir}); err != nil {
		r.t.Fatal(err)
	}
	p := filepath.Join(r.dir, fmt.Sprintf("%s-%s-%d.apb", s.name, s.version, time.Now().UnixNano()))
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *rig) install(e *Engine, path string, opts InstallOptions) (Outcome, error) {
	r.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	return e.Install(context.Background(), f, opts)
}

// reboot power-cycles the simulated board (optionally with the first boot
// hanging) and starts a fresh engine as the daemon would, resuming.
func (r *rig) reboot(first sim.Behaviour) (*Engine, string) {
	r.t.Helper()
	if _, err := r.boot.RebootWith(first); err != nil {
		r.t.Fatal(err)
	}
	e := r.engine()
	if err := e.ConfirmBoot(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	status, err := e.Resume(context.Background())
	if err != nil {
		r.t.Fatalf("Resume after reboot: %v", err)
	}
	return e, status
}

func (r *rig) state(e *Engine) *Record {
	r.t.Helper()
	rec, err := e.load()
	if err != nil {
		r.t.Fatal(err)
	}
	return rec
}

func (r *rig) slotBytes(name string) []byte {
	b, _ := os.ReadFile(filepath.Join(r.dir, "rootfs-"+strings.ToLower(name)+".img"))
	return b
}

// randomBytes is a deterministic pseudo-random payload of n bytes with
// some repetition so zstd has something to do.
func randomBytes(seed, n int) []byte {
	b := make([]byte, n)
	x := uint64(seed)*0x9E3779B97F4A7C15 + 1
	for i := range b {
		if i%1024 < 512 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			b[i] = byte(x)
		} else {
			b[i] = byte(i / 1024)
		}
	}
	return b
}

// eventually polls cond every 10 ms until it holds or d has passed, and
// reports whether it held.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
