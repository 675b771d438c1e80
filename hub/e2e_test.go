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
)

// simBoard is a simulated device running the real engine on the sim bootloader.
type simBoard struct {
	t       *testing.T
	dir     string
	cfg     *device.Config
	slots   *slots.Config
	boot    *sim.Bootloader
	trust   *bundle.Trust
	reboots int
}

type countReboots struct{ b *simBoard }

func (c countReboots) Reboot(context.Context) error { c.b.reboots++; return nil }

type healthy struct{}

func (healthy) Run(context.Context) error { return nil }

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
	return &simBoard{t: t, dir: dir, cfg: cfg, slots: sc, boot: boot, trust: trust}
}

// engine is the daemon as it starts after a (simulated) boot.
func (b *simBoard) engine() *device.Engine {
	e, err := device.New(b.cfg, device.Options{
		Slots: b.slots, Bootloader: b.boot, Rebooter: countReboots{b}, Health: healthy{}, Trust: b.trust,
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

// fetchBundle downloads an offered bundle over MQTT, verifying every chunk, and
// reassembles the .apb stream (header, signed manifest, stored chunks) for the engine.
func (d *fakeDevice) fetchBundle(o *transport.Offer, trust *bundle.Trust) []byte {
	d.t.Helper()
	d.send(&transport.Get{Offer: o.ID, Digest: o.Digest, Manifest: true, Seq: 1})
	md := d.nextData()
	if md.Err != "" {
		d.t.Fatalf("manifest: %s %s", md.Err, md.Detail)
	}
	m, err := bundle.VerifyManifest(md.Bytes, trust)
	if err != nil {
		d.t.Fatalf("verify manifest: %v", err)
	}
	var out bytes.Buffer
	out.Write(bundle.Magic[:])
	binary.Write(&out, binary.BigEndian, uint16(bundle.FormatVersion))
	binary.Write(&out, binary.BigEndian, uint16(0))
	binary.Write(&out, binary.BigEndian, uint32(len(md.Bytes)))
	out.Write(md.Bytes)
	for ci := range m.Components {
		c := &m.Components[ci]
		stored := make([][]byte, len(c.Chunks))
		for base := 0; base < len(c.Chunks); base += 8 {
			n := min(8, len(c.Chunks)-base)
			d.send(&transport.Get{Offer: o.ID, Digest: o.Digest, Comp: uint32(ci), Base: uint32(base), Bitmap: []byte{byte(1<<n - 1)}, Window: 8})
			for i := 0; i < n; i++ {
				dm := d.nextData()
				if dm.Err != "" {
					d.t.Fatalf("chunk: %s %s", dm.Err, dm.Detail)
				}
				if _, err := c.VerifyChunk(int(dm.Index), dm.Bytes); err != nil {
					d.t.Fatal(err)
				}
				stored[dm.Index] = dm.Bytes
			}
		}
		out.Write(bytes.Join(stored, nil))
	}
	return out.Bytes()
}

// TestEndToEnd: hub with its embedded broker, one simulated device running the real
// engine on the sim bootloader: deploy → download → install → reboot → commit, and
// the steps the hub recorded.
func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	key, vpub, pub := hubtest.Key(t)
	trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
	s := hubtest.Start(t, pub, nil)
	m := &bundle.Manifest{Name: "os", Version: "1.1.0", SecurityVersion: 2, Compatible: []string{"sim"},
		Created: time.Now().Unix() - 60, Severity: bundle.SeveritySecurity,
		Components: []bundle.Component{{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: "1.1.0", Compression: bundle.CompressionZstd}}}
	img := append(hubtest.Payload(11, 400<<10), bytes.Repeat([]byte("compressible "), 20000)...)
	var apb bytes.Buffer
	if err := bundle.Build(ctx, &apb, m, []io.Reader{bytes.NewReader(img)}, []crypto.Signer{key}, bundle.BuildOptions{TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Hub.Upload(ctx, "oscar", bytes.NewReader(apb.Bytes()), 0); err != nil {
		t.Fatal(err)
	}

	board := newSimBoard(t, trust)
	e := board.engine()
	dev := newFakeDevice(t, s, "sim-1")
	dev.send(helloOf("sim-1", e))
	waitFor(t, "sim-1 registered", func() bool { _, err := s.Hub.Store().Device(ctx, "sim-1"); return err == nil })
	if err := s.Hub.SetStatus(ctx, "oscar", "sim-1", hub.StatusAccepted); err != nil {
		t.Fatal(err)
	}
	dep, err := s.Hub.Deploy(ctx, "oscar", "os", "1.1.0", "sim-1")
	if err != nil {
		t.Fatal(err)
	}

	offer := dev.nextOffer()
	status := func(state, result string) {
		dev.send(&transport.Status{State: state, Offer: offer.ID, Bundle: offer.Bundle + "@" + offer.Version, Result: result})
	}
	status("downloading", "")
	file := dev.fetchBundle(offer, trust)
	status("installing", "")
	res, err := e.Install(ctx, bytes.NewReader(file), device.InstallOptions{})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if res.Status != device.StatusRebooting || board.reboots != 1 {
		t.Fatalf("Install = %s with %d reboots, want rebooting and 1", res.Status, board.reboots)
	}
	status("rebooting", "")

	// The board reboots into B on trial; the daemon starts again and resumes.
	if _, err := board.boot.RebootWith(sim.Default); err != nil {
		t.Fatal(err)
	}
	e = board.engine()
	if err := e.ConfirmBoot(ctx); err != nil {
		t.Fatal(err)
	}
	state, err := e.Resume(ctx)
	if err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if state != device.Committed.String() {
		t.Fatalf("after the trial boot: %s, want committed", state)
	}
	status(state, "success")
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
	if got, want := strings.Join(steps, " "), "offered downloading installing rebooting committed succeeded"; got != want {
		t.Errorf("hub recorded %q, want %q", got, want)
	}
	waitFor(t, "inventory after the update", func() bool {
		d, err := s.Hub.Store().Device(ctx, "sim-1")
		return err == nil && d.Inventory.Booted == "B" && d.Inventory.Components["rootfs"] == "1.1.0"
	})
	slotB, _ := os.ReadFile(filepath.Join(board.dir, "rootfs-b.img"))
	if !bytes.HasPrefix(slotB, img) {
		t.Error("slot B does not hold the deployed image")
	}
}
