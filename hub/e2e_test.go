package hub_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/device"
	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
	"github.com/autopatcher/autopatcher/slots"
	"github.com/autopatcher/autopatcher/slots/sim"
	"github.com/autopatcher/autopatcher/transport"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

// simBoard is a simulated device running the real engine on the sim bootloader.
type simBoard struct {
	t       *testing.T
	dir     string
	cfg     *device.Config
	slots   *slots.Config
	boot    *sim.Bootloader
	trust   *bundle.Trust
	health  device.HealthChecker
	reboots int
}

type countReboots struct{ b *simBoard }

func (c countReboots) Reboot(context.Context) error { c.b.reboots++; return nil }

type healthy struct{}

func (healthy) Run(context.Context) error { return nil }

type unhealthy struct{}

func (unhealthy) Run(context.Context) error {
	return fmt.Errorf("%w: GET http://127.0.0.1/health: status 500", device.ErrHealth)
}

func newSimBoard(t *testing.T, trust *bundle.Trust) *simBoard {
	dir := t.TempDir()
	boot, err := sim.New(filepath.Join(dir, "sim"))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := slots.ParseConfig([]byte(fmt.Sprintf(`
bootloader:
  type: sim
  sim: {dir: %[1]s/sim}
slots:
  rootfs:
    a: {device: %[1]s/rootfs-a.img, type: file, size: 64M}
    b: {device: %[1]s/rootfs-b.img, type: file, size: 64M}
`, dir)))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "rootfs-a.img"), bytes.Repeat([]byte("factory "), 4096), 0o644)
	cfg := device.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.HardwareID = "sim"
	cfg.FileRoot = filepath.Join(dir, "root")
	cfg.Hooks.Dir = filepath.Join(dir, "hooks")
	cfg.Health.Dir = filepath.Join(dir, "health.d")
	cfg.Health.Deadline = device.Duration(5 * time.Second)
	cfg.Watchdog.Device = filepath.Join(dir, "watchdog")
	os.MkdirAll(cfg.DataDir, 0o700)
	os.WriteFile(cfg.Watchdog.Device, nil, 0o644)
	return &simBoard{t: t, dir: dir, cfg: cfg, slots: sc, boot: boot, trust: trust, health: healthy{}}
}

// engine is the daemon as it starts after a (simulated) boot.
func (b *simBoard) engine() *device.Engine { return b.engineWith(countReboots{b}) }

// engineWith is the daemon as it starts after a (simulated) boot, restarting
// the board through r; every simulated board's engine is made here.
func (b *simBoard) engineWith(r device.Rebooter) *device.Engine {
	e, err := device.New(b.cfg, device.Options{
		Slots: b.slots, Bootloader: b.boot, Rebooter: r, Health: b.health, Trust: b.trust,
		BootID: func() (string, error) {
			boots, err := b.boot.Boots()
			if err != nil || len(boots) == 0 {
				return "0", err
			}
			return strconv.Itoa(boots[len(boots)-1].N), nil
		},
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return e
}

// hello reports the engine's inventory the way autopatchd does.
func helloOf(id string, e *device.Engine) *transport.Hello {
	st, _ := e.Status()
	h := &transport.Hello{Device: id, Hardware: "sim", Daemon: "e2e", Trial: st.Boot.Trial}
	for _, s := range []string{"A", "B"} {
		si := transport.SlotInfo{Class: "rootfs", Name: s, Booted: st.Booted == s}
		if si.Booted && st.Current != nil {
			si.Version = st.Current.Version
		}
		h.Slots = append(h.Slots, si)
	}
	for n, v := range st.Installed {
		h.Components = append(h.Components, transport.Installed{Name: n, Version: v})
	}
	if st.Last != nil {
		h.LastResult = st.Last.State.String()
	}
	return h
}

// memSink is an io.WriterAt over a fixed buffer.
type memSink []byte

func (m memSink) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write %d bytes at %d beyond %d", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

// agent is the device side of the protocol the way autopatchd runs it: an MQTT
// connection, the offer subscription and a transport.Fetcher.
type agent struct {
	t      *testing.T
	id     string
	conn   *transport.Conn
	fetch  *transport.Fetcher
	offers chan *transport.Offer
}

func newAgent(t *testing.T, s *hub.Server, id string) *agent {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := transport.Dial(ctx, transport.Config{Servers: []string{"mqtt://" + s.MQTTAddr()}, AllowPlain: true,
		ClientID: id, Username: id, Password: []byte("secret-" + id), Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a := &agent{t: t, id: id, conn: conn, offers: make(chan *transport.Offer, 4)}
	topic, _ := transport.Topic(id, transport.ChOffer)
	if err := conn.Subscribe(topic, func(_ string, m transport.Message) { a.offers <- m.(*transport.Offer) }); err != nil {
		t.Fatal(err)
	}
	if a.fetch, err = transport.NewFetcher(conn, id, transport.FetchOptions{Window: 8, Logger: discard()}); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *agent) send(m transport.Message) {
	a.t.Helper()
	topic, _ := transport.Topic(a.id, transport.ChannelOf(m))
	if err := a.conn.Publish(context.Background(), topic, m); err != nil {
		a.t.Fatal(err)
	}
}

// download fetches the offered bundle with the Fetcher, each chunk verified against
// the signed table, and reassembles the .apb file for the engine (the test bundles
// store chunks uncompressed, so the payload is the stored data).
func (a *agent) download(o *transport.Offer, trust *bundle.Trust) []byte {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	signed, err := a.fetch.Manifest(ctx, o)
	if err != nil {
		a.t.Fatal(err)
	}
	m, err := bundle.VerifyManifest(signed, trust)
	if err != nil {
		a.t.Fatalf("verify manifest: %v", err)
	}
	var out bytes.Buffer
	out.Write(bundle.Magic[:])
	binary.Write(&out, binary.BigEndian, uint16(bundle.FormatVersion))
	binary.Write(&out, binary.BigEndian, uint16(0))
	binary.Write(&out, binary.BigEndian, uint32(len(signed)))
	out.Write(signed)
	done := &transporttest.Progress{}
	for i := range m.Components {
		c := &m.Components[i]
		sink := make(memSink, c.Size)
		if err := a.fetch.Fetch(ctx, transport.Request{Offer: o.ID, Digest: o.Digest, Index: i, Comp: c, Sink: sink, Done: done}); err != nil {
			a.t.Fatal(err)
		}
		out.Write(sink)
	}
	return out.Bytes()
}

// TestEndToEnd: hub with its embedded broker, and a simulated board running the real
// engine on the sim bootloader, its agent using the transport's Fetcher: deploy →
// download → install → trial reboot → commit (or, when the health check fails,
// rollback), with the steps the hub recorded.
func TestEndToEnd(t *testing.T) {
	tests := []struct {
		name      string
		health    device.HealthChecker
		boots     int // reboots until the engine reports a final state
		final     string
		steps     string
		booted    string
		installed string
	}{
		{"commit", healthy{}, 1, device.Committed.String(),
			"offered downloading installing rebooting committed succeeded", "B", "1.1.0"},
		{"health check fails", unhealthy{}, 2, device.RolledBack.String(),
			"offered downloading installing rebooting rolled-back", "A", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			key, vpub, pub := hubtest.Key(t)
			trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
			s := hubtest.Start(t, pub, nil)
			m := &bundle.Manifest{Name: "os", Version: "1.1.0", SecurityVersion: 2, Compatible: []string{"sim"},
				Created: time.Now().Unix() - 60, Severity: bundle.SeveritySecurity,
				Components: []bundle.Component{{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: "1.1.0", Compression: bundle.CompressionNone}}}
			img := hubtest.Payload(11, 600<<10)
			var apb bytes.Buffer
			if err := bundle.Build(ctx, &apb, m, []io.Reader{bytes.NewReader(img)}, []crypto.Signer{key}, bundle.BuildOptions{TempDir: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Hub.Upload(ctx, "oscar", bytes.NewReader(apb.Bytes()), 0); err != nil {
				t.Fatal(err)
			}

			board := newSimBoard(t, trust)
			board.health = tt.health
			e := board.engine()
			dev := newAgent(t, s, "sim-1")
			dev.send(helloOf("sim-1", e))
			waitFor(t, "sim-1 registered", func() bool { _, err := s.Hub.Store().Device(ctx, "sim-1"); return err == nil })
			if err := s.Hub.SetStatus(ctx, "oscar", "sim-1", hub.StatusAccepted); err != nil {
				t.Fatal(err)
			}
			dep, err := s.Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "os", Version: "1.1.0", Device: "sim-1"})
			if err != nil {
				t.Fatal(err)
			}
			var offer *transport.Offer
			select {
			case offer = <-dev.offers:
			case <-time.After(10 * time.Second):
				t.Fatal("no offer")
			}
			status := func(state, result string) {
				dev.send(&transport.Status{State: state, Offer: offer.ID, Bundle: offer.Bundle + "@" + offer.Version, Result: result})
			}
			status("downloading", "")
			file := dev.download(offer, trust)
			if st := dev.fetch.Stats.Chunks.Load(); st == 0 || dev.fetch.Stats.Corrupt.Load() != 0 {
				t.Errorf("fetcher stats: %d chunks, %d corrupt", st, dev.fetch.Stats.Corrupt.Load())
			}
			status("installing", "")
			res, err := e.Install(ctx, bytes.NewReader(file), device.InstallOptions{})
			if err != nil {
				t.Fatalf("Install: %v", err)
			}
			if res.Status != device.StatusRebooting {
				t.Fatalf("Install = %s, want rebooting", res.Status)
			}
			status("rebooting", "")
			// The board reboots (into B on trial, then back to A after a failed check);
			// each time the daemon starts again and resumes.
			var state string
			for i := 0; i < tt.boots; i++ {
				if _, err := board.boot.RebootWith(sim.Default); err != nil {
					t.Fatal(err)
				}
				e = board.engine()
				if err := e.ConfirmBoot(ctx); err != nil {
					t.Fatal(err)
				}
				if state, err = e.Resume(ctx); err != nil {
					t.Fatalf("Resume: %v", err)
				}
			}
			if state != tt.final {
				t.Fatalf("engine ended %q, want %q", state, tt.final)
			}
			result := "success"
			if state == device.RolledBack.String() {
				result = "rollback"
			}
			status(state, result)
			dev.send(helloOf("sim-1", e))

			waitFor(t, "deployment to finish", func() bool {
				d, err := s.Hub.Store().Deployment(ctx, dep.ID)
				return err == nil && hub.Final(d.State)
			})
			d, _ := s.Hub.Store().Deployment(ctx, dep.ID)
			var steps []string
			for _, st := range d.Steps {
				steps = append(steps, st.State)
			}
			if got := strings.Join(steps, " "); got != tt.steps {
				t.Errorf("hub recorded %q, want %q", got, tt.steps)
			}
			waitFor(t, "inventory after the update", func() bool {
				d, err := s.Hub.Store().Device(ctx, "sim-1")
				return err == nil && d.Inventory.Booted == tt.booted && d.Inventory.Components["rootfs"] == tt.installed
			})
			if tt.final == device.Committed.String() {
				slotB, _ := os.ReadFile(filepath.Join(board.dir, "rootfs-b.img"))
				if !bytes.HasPrefix(slotB, img) {
					t.Error("slot B does not hold the deployed image")
				}
			}
		})
	}
}
