package hub_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/device"
	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
	"github.com/autopatcher/autopatcher/slots/sim"
	"github.com/autopatcher/autopatcher/transport"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

// The tests here run the real device agent (device.Agent: manifest, Prepare,
// chunk fetch straight into the slot, Finish, reboot per policy, reports)
// against the real hub with its embedded broker, on the simulator board.

const agentWindow = 8

// fleet is one hub whose data dir and MQTT address survive a restart.
type fleet struct {
	t    *testing.T
	dir  string
	addr string
	key  string // vendor public key PEM path
	mu   sync.Mutex
	s    *hub.Server
	sent atomic.Uint64 // chunks sent by hubs already stopped
}

func startFleet(t *testing.T, vendorKey string) *fleet {
	f := &fleet{t: t, dir: t.TempDir(), addr: "127.0.0.1:0", key: vendorKey}
	f.start()
	f.addr = f.server().MQTTAddr()
	t.Cleanup(func() { f.server().Close() })
	return f
}

func (f *fleet) start() {
	var cfg hub.Config
	cfg.Data = f.dir
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = f.addr
	cfg.VendorKeys = []string{f.key}
	cfg.Tokens = []hub.TokenConfig{{Name: "oscar", Role: hub.RoleOperator, Token: hubtest.OperatorToken},
		{Name: "victor", Role: hub.RoleViewer, Token: hubtest.ViewerToken}}
	var s *hub.Server
	var err error
	for range 50 { // the port of the stopped hub may take a moment to free
		if s, err = hub.Start(context.Background(), cfg, discard()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("start hub: %v", err)
	}
	f.mu.Lock()
	f.s = s
	f.mu.Unlock()
}

func (f *fleet) server() *hub.Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s
}

// restart stops the hub (and its broker) and starts it again on the same data.
func (f *fleet) restart() {
	s := f.server()
	f.sent.Add(s.Hub.Chunks.Stats.Chunks.Load())
	s.Close()
	f.start()
}

// chunksSent is how many chunks all the hub instances handed to the broker.
func (f *fleet) chunksSent() uint64 {
	return f.sent.Load() + f.server().Hub.Chunks.Stats.Chunks.Load()
}

// board is a simulated board whose reboots are counted across goroutines.
type board struct {
	*simBoard
	reboots atomic.Int64
}

type boardRebooter struct{ b *board }

func (r boardRebooter) Reboot(context.Context) error { r.b.reboots.Add(1); return nil }

func newBoard(t *testing.T, trust *bundle.Trust) *board {
	return &board{simBoard: newSimBoard(t, trust)}
}

// engine is the daemon's engine as it starts after a (simulated) boot.
func (b *board) engine() *device.Engine { return b.engineWith(boardRebooter{b}) }

// daemon is the agent of a board as autopatchd runs it after each boot.
type daemon struct {
	cancel context.CancelFunc
	done   chan struct{}
	agent  *device.Agent
}

func (d *daemon) stop() {
	d.cancel()
	<-d.done
}

func (b *board) hubConfig(f *fleet, id string) device.HubConfig {
	pw := filepath.Join(b.dir, "hub-password")
	if err := os.WriteFile(pw, []byte("secret-"+id+"\n"), 0o600); err != nil {
		b.t.Fatal(err)
	}
	h := device.DefaultConfig().Hub
	h.Servers = []string{"mqtt://" + f.addr}
	h.DeviceID, h.PasswordFile, h.AllowPlain = id, pw, true
	h.Window, h.ChunkTimeout, h.Poll, h.ProgressEvery = agentWindow, device.Duration(time.Second), device.Duration(50*time.Millisecond), 16
	return h
}

// runDaemon boots the daemon's agent with e; progress sees every chunk.
func (b *board) runDaemon(f *fleet, id string, e *device.Engine, progress func(offer, comp string, done, total int)) *daemon {
	b.t.Helper()
	return b.runDaemonWith(b.hubConfig(f, id), e, progress)
}

func (b *board) runDaemonWith(cfg device.HubConfig, e *device.Engine, progress func(offer, comp string, done, total int)) *daemon {
	b.t.Helper()
	id := cfg.DeviceID
	log := discard()
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("board", id)
	}
	a, err := device.NewAgent(e, cfg, device.AgentOptions{Logger: log, Version: "test", Progress: progress})
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan struct{}), agent: a}
	go func() {
		defer close(d.done)
		if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			b.t.Errorf("agent: %v", err)
		}
	}()
	b.t.Cleanup(d.stop)
	return d
}

// rebootCommitted waits for the board's n-th reboot request, stops d,
// power-cycles the board and runs the daemon's boot work (ConfirmBoot, Resume:
// the trial and its commit or rollback), which must commit the trial; it
// returns the new engine.
func (b *board) rebootCommitted(ctx context.Context, d *daemon, n int64) *device.Engine {
	b.t.Helper()
	waitReboots(b.t, b, n)
	d.stop()
	if _, err := b.boot.RebootWith(sim.Default); err != nil {
		b.t.Fatal(err)
	}
	e := b.engine()
	if err := e.ConfirmBoot(ctx); err != nil {
		b.t.Fatal(err)
	}
	state, err := e.Resume(ctx)
	if err != nil {
		b.t.Fatalf("Resume: %v", err)
	}
	if state != device.Committed.String() {
		b.t.Fatalf("after the reboot the engine is %q, want committed", state)
	}
	return e
}

// compressible is a payload zstd shrinks: random blocks between runs of text.
func compressible(seed uint64, n int) []byte {
	var out []byte
	r := hubtest.Payload(seed, n)
	for len(out) < n {
		out = append(out, r[len(out):len(out)+min(4096, n-len(out))]...)
		out = append(out, bytes.Repeat([]byte("autopatcher "), 1000)...)
	}
	return out[:n]
}

func buildBundle(t *testing.T, key crypto.Signer, version string, secver uint64, comp bundle.Compression, img []byte) []byte {
	t.Helper()
	m := &bundle.Manifest{Name: "os", Version: version, SecurityVersion: secver, Compatible: []string{"sim"},
		Created: time.Now().Unix() - 60, Severity: bundle.SeveritySecurity,
		Components: []bundle.Component{{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: version, Compression: comp}}}
	var apb bytes.Buffer
	if err := bundle.Build(context.Background(), &apb, m, []io.Reader{bytes.NewReader(img)}, []crypto.Signer{key}, bundle.BuildOptions{TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	return apb.Bytes()
}

// upload stores a bundle on the hub and returns its verified manifest.
func upload(t *testing.T, s *hub.Server, apb []byte, trust *bundle.Trust) *bundle.Manifest {
	t.Helper()
	if _, _, err := s.Hub.Upload(context.Background(), "oscar", bytes.NewReader(apb), 0); err != nil {
		t.Fatal(err)
	}
	br, err := bundle.Open(bytes.NewReader(apb), trust)
	if err != nil {
		t.Fatal(err)
	}
	return br.Manifest()
}

func accept(t *testing.T, s *hub.Server, id string) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, id+" registered", func() bool { _, err := s.Hub.Store().Device(ctx, id); return err == nil })
	if err := s.Hub.SetStatus(ctx, "oscar", id, hub.StatusAccepted); err != nil {
		t.Fatal(err)
	}
}

func steps(t *testing.T, s *hub.Server, depID int64) string {
	t.Helper()
	ctx := context.Background()
	waitFor(t, "deployment to finish", func() bool {
		d, err := s.Hub.Store().Deployment(ctx, depID)
		return err == nil && hub.Final(d.State)
	})
	d, _ := s.Hub.Store().Deployment(ctx, depID)
	var out []string
	for _, st := range d.Steps {
		out = append(out, st.State)
	}
	return strings.Join(out, " ")
}

func waitReboots(t *testing.T, b *board, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b.reboots.Load() >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for reboot %d", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func slotHolds(t *testing.T, b *board, slot string, img []byte) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(b.dir, "rootfs-"+slot+".img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) {
		t.Errorf("slot %s holds %d bytes (sha %x), want the deployed image (%d bytes, sha %x)", slot, len(got), sha256.Sum256(got), len(img), sha256.Sum256(img))
	}
}

// deployAndCommit takes a board from an offer to the committed update: the
// agent downloads and installs, the board reboots into the trial, commits,
// and the next daemon reports the result. fault, when set, runs once when
// about a third of the chunks are written.
func deployAndCommit(t *testing.T, f *fleet, b *board, id, version string, fault func(d **daemon, e **device.Engine)) (steps_ string, want string) {
	t.Helper()
	ctx := context.Background()
	e := b.engine()
	var d *daemon
	var once sync.Once
	var progress func(offer, comp string, done, total int)
	if fault != nil {
		progress = func(_, _ string, done, total int) {
			if done >= total/3 {
				once.Do(func() { fault(&d, &e) })
			}
		}
	}
	d = b.runDaemon(f, id, e, progress)
	dep, err := f.server().Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "os", Version: version, Device: id})
	if err != nil {
		t.Fatal(err)
	}
	last := b.runDaemon(f, id, b.rebootCommitted(ctx, d, b.reboots.Load()+1), nil)
	defer last.stop()
	return steps(t, f.server(), dep.ID), "offered downloading installing rebooting committed succeeded"
}

func TestAgentDeploy(t *testing.T) {
	for _, comp := range []bundle.Compression{bundle.CompressionNone, bundle.CompressionZstd} {
		t.Run(string(comp), func(t *testing.T) {
			key, vpub, pub := hubtest.Key(t)
			trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
			f := startFleet(t, pub)
			img := compressible(21, 3<<20)
			m := upload(t, f.server(), buildBundle(t, key, "1.1.0", 2, comp, img), trust)
			compressed := 0
			for _, c := range m.Components[0].Chunks {
				if c.StoredLength < c.Length {
					compressed++
				}
			}
			if (compressed > 0) != (comp == bundle.CompressionZstd) {
				t.Fatalf("%d of %d chunks stored compressed with compression %s", compressed, len(m.Components[0].Chunks), comp)
			}
			b := newBoard(t, trust)
			first := b.runDaemon(f, "sim-1", b.engine(), nil) // first contact: pending
			accept(t, f.server(), "sim-1")
			first.stop()

			got, want := deployAndCommit(t, f, b, "sim-1", "1.1.0", nil)
			if got != want {
				t.Errorf("hub recorded %q, want %q", got, want)
			}
			slotHolds(t, b, "b", img)
			if sent, n := f.chunksSent(), uint64(len(m.Components[0].Chunks)); sent != n {
				t.Errorf("hub sent %d chunks, the image has %d", sent, n)
			}
			ctx := context.Background()
			waitFor(t, "inventory after the update", func() bool {
				d, err := f.server().Hub.Store().Device(ctx, "sim-1")
				return err == nil && d.Inventory.Booted == "B" && d.Inventory.Components["rootfs"] == "1.1.0"
			})
		})
	}
}

// TestAgentResume cuts a transfer at a third and checks that the update
// completes and that the hub sent at most one window of chunks twice.
func TestAgentResume(t *testing.T) {
	tests := []struct {
		name  string
		fault func(f *fleet, b *board) func(d **daemon, e **device.Engine)
	}{
		{"disconnect", func(f *fleet, b *board) func(**daemon, **device.Engine) {
			return func(**daemon, **device.Engine) { f.server().Broker.Kick("sim-1") }
		}},
		{"hub and broker restart", func(f *fleet, b *board) func(**daemon, **device.Engine) {
			return func(**daemon, **device.Engine) { f.restart() }
		}},
		{"daemon restart", func(f *fleet, b *board) func(**daemon, **device.Engine) {
			return func(d **daemon, e **device.Engine) {
				// On the fetching goroutine: stop the daemon from another one,
				// then start a new engine and agent on the same data dir.
				old := *d
				go func() {
					old.cancel()
					<-old.done
					*e = b.engine()
					*d = b.runDaemon(f, "sim-1", *e, nil)
				}()
			}
		}},
		{"board reboot", func(f *fleet, b *board) func(**daemon, **device.Engine) {
			return func(d **daemon, e **device.Engine) {
				old := *d
				go func() {
					old.cancel()
					<-old.done
					if _, err := b.boot.RebootWith(sim.Default); err != nil {
						b.t.Error(err)
					}
					ne := b.engine()
					if err := ne.ConfirmBoot(context.Background()); err != nil {
						b.t.Error(err)
					}
					if st, err := ne.Resume(context.Background()); err != nil || st != device.Downloading.String() {
						b.t.Errorf("after a reboot mid-download Resume = %q, %v; want downloading", st, err)
					}
					*e = ne
					*d = b.runDaemon(f, "sim-1", ne, nil)
				}()
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, vpub, pub := hubtest.Key(t)
			trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
			f := startFleet(t, pub)
			img := hubtest.Payload(31, 4<<20)
			m := upload(t, f.server(), buildBundle(t, key, "1.1.0", 2, bundle.CompressionNone, img), trust)
			b := newBoard(t, trust)
			first := b.runDaemon(f, "sim-1", b.engine(), nil) // first contact: pending
			accept(t, f.server(), "sim-1")
			first.stop()

			got, want := deployAndCommit(t, f, b, "sim-1", "1.1.0", tt.fault(f, b))
			if got != want {
				t.Errorf("hub recorded %q, want %q", got, want)
			}
			slotHolds(t, b, "b", img)
			n := uint64(len(m.Components[0].Chunks))
			sent := f.chunksSent()
			t.Logf("%d chunks, hub sent %d", n, sent)
			if sent < n || sent-n > agentWindow {
				t.Errorf("hub sent %d chunks for %d: %d twice, want at most one window (%d)", sent, n, sent-n, agentWindow)
			}
		})
	}
}

// TestAgentDelta: after a first update, a second image that differs in a few
// places downloads only the chunks the active slot does not hold.
func TestAgentDelta(t *testing.T) {
	key, vpub, pub := hubtest.Key(t)
	trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
	f := startFleet(t, pub)
	img1 := hubtest.Payload(41, 4<<20)
	img2 := bytes.Clone(img1)
	for _, off := range []int{100 << 10, 1 << 20, 3<<20 + 12345} {
		copy(img2[off:], []byte("a few changed bytes"))
	}
	m1 := upload(t, f.server(), buildBundle(t, key, "1.1.0", 2, bundle.CompressionNone, img1), trust)
	m2 := upload(t, f.server(), buildBundle(t, key, "1.2.0", 2, bundle.CompressionNone, img2), trust)
	b := newBoard(t, trust)
	first := b.runDaemon(f, "sim-1", b.engine(), nil) // first contact: pending
	accept(t, f.server(), "sim-1")
	first.stop()
	if got, want := deployAndCommit(t, f, b, "sim-1", "1.1.0", nil); got != want {
		t.Fatalf("first update: hub recorded %q, want %q", got, want)
	}
	old := map[[32]byte]bool{}
	for _, c := range m1.Components[0].Chunks {
		old[[32]byte(c.SHA256)] = true
	}
	var changed, changedBytes uint64
	seen := map[[32]byte]bool{}
	for _, c := range m2.Components[0].Chunks {
		h := [32]byte(c.SHA256)
		if !old[h] && !seen[h] {
			changed++
			changedBytes += uint64(c.StoredLength)
		}
		seen[h] = true
	}
	if changed == 0 || changed > 6 {
		t.Fatalf("the second image changes %d chunks; the test wants a few", changed)
	}
	before := f.chunksSent()
	bytesBefore := f.server().Hub.Chunks.Stats.Bytes.Load()
	if got, want := deployAndCommit(t, f, b, "sim-1", "1.2.0", nil); got != want {
		t.Errorf("second update: hub recorded %q, want %q", got, want)
	}
	slotHolds(t, b, "a", img2)
	sent := f.chunksSent() - before
	manifestBytes := uint64(0)
	// The hub's byte counter includes the signed manifest, fetched once.
	if sent != changed {
		t.Errorf("delta update: hub sent %d chunks, want the %d changed ones", sent, changed)
	}
	wire := f.server().Hub.Chunks.Stats.Bytes.Load() - bytesBefore - manifestBytes
	t.Logf("delta: %d of %d chunks changed; %d bytes on the wire (manifest included) for a %d-byte image", changed, len(m2.Components[0].Chunks), wire, len(img2))
	if wire >= uint64(len(img2))/4 {
		t.Errorf("delta update moved %d bytes for a %d-byte image with %d changed chunks (%d bytes)", wire, len(img2), changed, changedBytes)
	}
}

// TestAgentOtherDevicesOffer: device A never sees device B's offer and the
// hub refuses A's requests for it.
func TestAgentOtherDevicesOffer(t *testing.T) {
	ctx := context.Background()
	key, vpub, pub := hubtest.Key(t)
	trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
	f := startFleet(t, pub)
	upload(t, f.server(), buildBundle(t, key, "1.1.0", 2, bundle.CompressionNone, hubtest.Payload(51, 256<<10)), trust)
	ba, bb := newBoard(t, trust), newBoard(t, trust)
	fa, fb := ba.runDaemon(f, "sim-a", ba.engine(), nil), bb.runDaemon(f, "sim-b", bb.engine(), nil)
	accept(t, f.server(), "sim-a")
	accept(t, f.server(), "sim-b")
	fa.stop()
	fb.stop()
	dep, err := f.server().Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "os", Version: "1.1.0", Device: "sim-b"})
	if err != nil {
		t.Fatal(err)
	}

	// A raw connection as sim-a: subscribing to sim-b's offer is refused or silent.
	conn, err := transport.Dial(ctx, transport.Config{Servers: []string{"mqtt://" + f.addr}, AllowPlain: true,
		ClientID: "sim-a", Username: "sim-a", Password: []byte("secret-sim-a"), Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan transport.Message, 1)
	topic, _ := transport.Topic("sim-b", transport.ChOffer)
	_ = conn.Subscribe(topic, func(_ string, m transport.Message) { got <- m })
	fetch, err := transport.NewFetcher(conn, "sim-a", transport.FetchOptions{Timeout: time.Second, MaxRetries: 2, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	offerID := "dep-" + strconv.FormatInt(dep.ID, 10)
	_, err = fetch.Manifest(ctx, &transport.Offer{ID: offerID})
	if !errors.Is(err, transport.ErrRefused) || !strings.Contains(err.Error(), string(transport.KindNotOffered)) {
		t.Errorf("sim-a fetching sim-b's manifest: %v, want not-offered", err)
	}
	select {
	case m := <-got:
		t.Errorf("sim-a received sim-b's offer: %+v", m)
	case <-time.After(500 * time.Millisecond):
	}
	conn.Close()
	// sim-a's own daemon finds nothing to do.
	ea := ba.engine()
	da := ba.runDaemon(f, "sim-a", ea, nil)
	time.Sleep(300 * time.Millisecond)
	da.stop()
	if st, _ := ea.Status(); st.State != device.Idle || st.Bundle != nil {
		t.Errorf("sim-a engine = %s, want idle with nothing under way", st.State)
	}
	if n := ba.reboots.Load(); n != 0 {
		t.Errorf("sim-a rebooted %d times", n)
	}
}

// TestAgentProcessMosquitto: the built autopatchd binary runs `run` on a
// simulated board against Debian's mosquitto, the hub connected to the same
// broker (external-broker mode): deploy → download → install → simulated
// reboot → trial → commit, all reported.
func TestAgentProcessMosquitto(t *testing.T) {
	ctx := context.Background()
	gobin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("go toolchain needed to build autopatchd")
		}
		t.Skip("go not in PATH; cannot build autopatchd")
	}
	url := hubtest.Mosquitto(t, "../docs/mosquitto/acl", map[string]string{
		transport.Hub: "hub-secret", "sim-p": "secret-sim-p",
	})
	key, vpub, pub := hubtest.Key(t)
	trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
	s := hubtest.Start(t, pub, func(c *hub.Config) {
		c.MQTT.Broker = url
		c.MQTT.HubPassword = "hub-secret"
	})
	img := compressible(61, 2<<20)
	upload(t, s, buildBundle(t, key, "1.1.0", 2, bundle.CompressionZstd, img), trust)

	dir := t.TempDir()
	bin := filepath.Join(dir, "autopatchd")
	build := exec.Command(gobin, "build", "-o", bin, "../cmd/autopatchd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as shipped: static, and able to drop capabilities
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build autopatchd: %v\n%s", err, out)
	}
	if _, err := sim.New(filepath.Join(dir, "sim")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs-a.img"), bytes.Repeat([]byte("factory "), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("slots.yaml", fmt.Sprintf(`bootloader:
  type: sim
  sim: {dir: %[1]s/sim}
slots:
  rootfs:
    a: {device: %[1]s/rootfs-a.img, type: file, size: 64M}
    b: {device: %[1]s/rootfs-b.img, type: file, size: 64M}
`, dir))
	write("password", "secret-sim-p\n")
	for _, d := range []string{"data", "hooks", "health.d", "root"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	cfg := write("device.yaml", fmt.Sprintf(`data_dir: %[1]s/data
slots: %[1]s/slots.yaml
hardware_id: sim
file_root: %[1]s/root
trust: {keys: [%[2]s]}
health: {dir: %[1]s/health.d, deadline: 10s}
watchdog: {device: ""}
hooks: {dir: %[1]s/hooks}
hub:
  servers: [%[3]s]
  device_id: sim-p
  password_file: %[1]s/password
  allow_plain: true
  chunk_timeout: 2s
  poll: 100ms
`, dir, pub, url))

	var logs bytes.Buffer
	var logMu sync.Mutex
	cmd := exec.Command(bin, "-c", cfg, "-log-level", "debug", "run")
	cmd.Stdout = &lockedWriter{w: &logs, mu: &logMu}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			logMu.Lock()
			t.Logf("autopatchd output:\n%s", logs.String())
			logMu.Unlock()
		}
	}()

	waitFor(t, "sim-p registered", func() bool { _, err := s.Hub.Store().Device(ctx, "sim-p"); return err == nil })
	if os.Geteuid() == 0 {
		// Started as root, the daemon keeps only the capabilities it uses.
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(st), "NoNewPrivs:\t1") || !strings.Contains(string(st), "CapBnd:\t00000000006200ff") {
			t.Errorf("autopatchd runs with:\n%s", st)
		}
	}
	if err := s.Hub.SetStatus(ctx, "oscar", "sim-p", hub.StatusAccepted); err != nil {
		t.Fatal(err)
	}
	dep, err := s.Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "os", Version: "1.1.0", Device: "sim-p"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		d, err := s.Hub.Store().Deployment(ctx, dep.ID)
		if err == nil && hub.Final(d.State) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment not finished: %+v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, want := steps(t, s, dep.ID), "offered downloading installing rebooting committed succeeded"; got != want {
		t.Errorf("hub recorded %q, want %q", got, want)
	}
	got, err := os.ReadFile(filepath.Join(dir, "rootfs-b.img"))
	if err != nil || !bytes.Equal(got, img) {
		t.Errorf("slot B does not hold the deployed image (%v)", err)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// TestAgentMutualTLS: a device with a client certificate from the fleet CA
// connects over TLS only (no password), is accepted by its certificate and
// takes an update to commit.
func TestAgentMutualTLS(t *testing.T) {
	ctx := context.Background()
	serverCA := transporttest.NewNamedCA(t, "broker ca")
	serverCert, serverKey := serverCA.IssueDual(t, "127.0.0.1")
	fleetCA := transporttest.NewNamedCA(t, "fleet ca")
	key, vpub, pub := hubtest.Key(t)
	trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
	s := hubtest.Start(t, pub, func(c *hub.Config) {
		c.MQTT.Addr = "-"
		c.MQTT.TLSAddr = "127.0.0.1:0"
		c.MQTT.TLSCert, c.MQTT.TLSKey = serverCert, serverKey
		c.MQTT.RequireCerts = true
		c.DeviceCA = fleetCA.Cert
	})
	img := hubtest.Payload(71, 1<<20)
	upload(t, s, buildBundle(t, key, "1.1.0", 2, bundle.CompressionZstd, img), trust)
	b := newBoard(t, trust)
	cert, certKey := fleetCA.IssueDual(t, "sim-tls")
	cfg := device.DefaultConfig().Hub
	cfg.Servers = []string{"mqtts://" + s.MQTTTLSAddr()}
	cfg.DeviceID, cfg.CA, cfg.Cert, cfg.Key = "sim-tls", serverCA.Cert, cert, certKey
	cfg.ChunkTimeout, cfg.Poll = device.Duration(time.Second), device.Duration(50*time.Millisecond)

	d := b.runDaemonWith(cfg, b.engine(), nil)
	waitFor(t, "sim-tls accepted by its certificate", func() bool {
		dev, err := s.Hub.Store().Device(ctx, "sim-tls")
		return err == nil && dev.Status == hub.StatusAccepted
	})
	dep, err := s.Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "os", Version: "1.1.0", Device: "sim-tls"})
	if err != nil {
		t.Fatal(err)
	}
	b.runDaemonWith(cfg, b.rebootCommitted(ctx, d, 1), nil)
	if got, want := steps(t, s, dep.ID), "offered downloading installing rebooting committed succeeded"; got != want {
		t.Errorf("hub recorded %q, want %q", got, want)
	}
	slotHolds(t, b, "b", img)
}
