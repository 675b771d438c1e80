package device

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots/sim"
	"github.com/autopatcher/autopatcher/transport"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

// hubSide is a broker and the hub's chunk server over a test store; it
// records the Status messages devices send.
type hubSide struct {
	t      *testing.T
	broker *transporttest.Broker
	store  *transporttest.Store
	offers *transport.OfferSet
	conn   *transport.Conn

	mu       sync.Mutex
	statuses []*transport.Status
	hellos   []*transport.Hello
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newHubSide(t *testing.T) *hubSide {
	b := transporttest.Start(t)
	b.Add(transport.Hub, []byte("hub"))
	h := &hubSide{t: t, broker: b, store: transporttest.NewStore(), offers: &transport.OfferSet{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := transport.Dial(ctx, transport.Config{Servers: []string{b.URL()}, AllowPlain: true, ClientID: transport.Hub,
		Username: transport.Hub, Password: []byte("hub"), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.conn = conn
	srv := transport.NewServer(conn, h.store, h.offers.Offered, transport.ServeOptions{Logger: quietLog()})
	sctx, scancel := context.WithCancel(context.Background())
	t.Cleanup(scancel)
	if err := srv.Start(sctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.Subscribe(transport.Filter(transport.ChStatus), func(_ string, m transport.Message) {
		h.mu.Lock()
		h.statuses = append(h.statuses, m.(*transport.Status))
		h.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Subscribe(transport.Filter(transport.ChHello), func(_ string, m transport.Message) {
		h.mu.Lock()
		h.hellos = append(h.hellos, m.(*transport.Hello))
		h.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// offer serves the bundle at path as offerID to device and publishes the offer.
func (h *hubSide) offer(device, offerID, path string, trust *bundle.Trust, p transport.Policy, expires int64) *transport.Offer {
	h.t.Helper()
	apb, err := os.ReadFile(path)
	if err != nil {
		h.t.Fatal(err)
	}
	m, digest, err := h.store.Add(offerID, apb, trust)
	if err != nil {
		h.t.Fatal(err)
	}
	h.offers.Add(device, offerID, time.Time{})
	o := &transport.Offer{ID: offerID, Bundle: m.Name, Version: m.Version, Digest: digest, Issued: 1_800_000_000 - 10, Expires: expires, Policy: p}
	h.send(device, o)
	return o
}

func (h *hubSide) send(device string, m transport.Message) {
	h.t.Helper()
	topic, _ := transport.Topic(device, transport.ChannelOf(m))
	if err := h.conn.Publish(context.Background(), topic, m); err != nil {
		h.t.Fatal(err)
	}
}

// states is the sequence of distinct states reported about offer, with results.
func (h *hubSide) states(offer string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.statuses {
		if s.Offer != offer {
			continue
		}
		st := s.State
		if s.Result != "" {
			st += "/" + s.Result
			if s.Kind != "" {
				st += ":" + string(s.Kind)
			}
		}
		if len(out) == 0 || out[len(out)-1] != st {
			out = append(out, st)
		}
	}
	return strings.Join(out, " ")
}

func (h *hubSide) waitState(offer, suffix string) {
	h.t.Helper()
	if !eventually(15*time.Second, func() bool { return strings.HasSuffix(h.states(offer), suffix) }) {
		h.t.Fatalf("offer %s: states %q, waiting for %q", offer, h.states(offer), suffix)
	}
}

// startAgent runs the agent of e as dev-1 until the test ends or stop is called.
func (r *rig) startAgent(h *hubSide, e *Engine) (stop func()) {
	r.t.Helper()
	h.broker.Add("dev-1", []byte("pw-dev-1"))
	pw := filepath.Join(r.dir, "pw")
	os.WriteFile(pw, []byte("pw-dev-1\n"), 0o600)
	cfg := DefaultConfig().Hub
	cfg.Servers, cfg.DeviceID, cfg.PasswordFile, cfg.AllowPlain = []string{h.broker.URL()}, "dev-1", pw, true
	cfg.ChunkTimeout, cfg.Poll, cfg.Window = Duration(300*time.Millisecond), Duration(20*time.Millisecond), 4
	a, err := NewAgent(e, cfg, AgentOptions{Logger: quietLog(), Version: "test"})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			r.t.Errorf("agent: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	r.t.Cleanup(stop)
	return stop
}

func (r *rig) rebootCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reboots
}

// TestAgentRebootPolicyHub: an offer whose policy waits for the hub installs,
// reports waiting-hub and reboots only on the hub's command; the trial's
// commit is reported by the daemon after the reboot; the retained offer seen
// again is not acted on twice.
func TestAgentRebootPolicyHub(t *testing.T) {
	r := newRig(t)
	h := newHubSide(t)
	p := r.build(spec{version: "1.1.0", security: 1, comps: []comp{image("rootfs", "1.1.0", randomBytes(4, 1<<20))}})
	stop := r.startAgent(h, r.engine())
	o := h.offer("dev-1", "dep-1", p, r.trust, transport.Policy{Reboot: transport.RebootHub}, 0)
	h.waitState(o.ID, "waiting-hub")
	if n := r.rebootCount(); n != 0 {
		t.Fatalf("rebooted %d times before the hub said so", n)
	}
	h.send("dev-1", &transport.Cmd{ID: "c1", Op: transport.CmdReboot, Offer: o.ID})
	h.waitState(o.ID, "rebooting")
	eventually(10*time.Second, func() bool { return r.rebootCount() != 0 })
	if n := r.rebootCount(); n != 1 {
		t.Fatalf("rebooted %d times after the reboot command, want 1", n)
	}
	stop()
	e, status := r.reboot(sim.Default)
	if status != Committed.String() {
		t.Fatalf("after the reboot: %s, want committed", status)
	}
	stop = r.startAgent(h, e)
	h.waitState(o.ID, "committed/success")
	want := "downloading installing waiting-hub rebooting committed/success"
	if got := h.states(o.ID); got != want {
		t.Errorf("reported %q, want %q", got, want)
	}
	// The offer again (a retained offer after a reconnect): nothing happens.
	h.send("dev-1", o)
	time.Sleep(300 * time.Millisecond)
	if got := h.states(o.ID); got != want {
		t.Errorf("after a repeated offer: %q, want %q", got, want)
	}
	stop()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.hellos) == 0 {
		t.Fatal("no hello")
	}
	last := h.hellos[len(h.hellos)-1]
	if last.Device != "dev-1" || last.Hardware != hwID || last.Offer != o.ID || last.LastResult != "success" ||
		!slices.Contains(last.Components, transport.Installed{Name: "rootfs", Version: "1.1.0"}) {
		t.Errorf("last hello = %+v", last)
	}
	var booted string
	for _, s := range last.Slots {
		if s.Booted {
			booted = s.Name + "@" + s.Version
		}
	}
	if booted != "B@1.1.0" {
		t.Errorf("hello says booted %q, want B@1.1.0", booted)
	}
}

// TestAgentRefusals: an expired offer and a bundle for other hardware are
// reported as failures with their kind; a cancel before the reboot abandons
// an installed update.
func TestAgentRefusals(t *testing.T) {
	r := newRig(t)
	h := newHubSide(t)
	r.startAgent(h, r.engine())

	good := r.build(spec{version: "1.1.0", security: 1, comps: []comp{image("rootfs", "1.1.0", randomBytes(5, 256<<10))}})
	o := h.offer("dev-1", "dep-1", good, r.trust, transport.Policy{Reboot: transport.RebootNow}, 1_800_000_000-5)
	h.waitState(o.ID, "failed/failed:expired")

	other := r.build(spec{version: "1.2.0", security: 1, hw: []string{"other"}, comps: []comp{image("rootfs", "1.2.0", randomBytes(6, 256<<10))}})
	o = h.offer("dev-1", "dep-2", other, r.trust, transport.Policy{Reboot: transport.RebootNow}, 0)
	h.waitState(o.ID, "failed/failed:incompatible")

	o = h.offer("dev-1", "dep-3", good, r.trust, transport.Policy{Reboot: transport.RebootHub}, 0)
	h.waitState(o.ID, "waiting-hub")
	h.send("dev-1", &transport.Cmd{ID: "c2", Op: transport.CmdCancel, Offer: o.ID})
	h.waitState(o.ID, "failed/failed:cancelled")
	rec := r.state(r.engine())
	if rec.State != Abandoned || rec.Bundle != nil {
		t.Errorf("after cancel: state %s, bundle %v", rec.State, rec.Bundle)
	}
	if bs, _ := r.boot.State(); bs.Pending != "" {
		t.Errorf("bootloader still tries %s after cancel", bs.Pending)
	}
	if n := r.rebootCount(); n != 0 {
		t.Errorf("rebooted %d times", n)
	}
}

// TestAgentOfferWithdrawn: a download under way is abandoned when the hub
// withdraws the offer.
func TestAgentOfferWithdrawn(t *testing.T) {
	r := newRig(t)
	h := newHubSide(t)
	p := r.build(spec{version: "1.1.0", security: 1, comps: []comp{image("rootfs", "1.1.0", randomBytes(4, 1<<20))}})
	d, err := r.engine().Prepare(context.Background(), signedOf(t, p), DownloadOptions{Offer: "dep-9"})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	r.startAgent(h, r.engine())
	h.send("dev-1", &transport.Offer{})
	eventually(10*time.Second, func() bool { return r.state(r.engine()).State != Downloading })
	if rec := r.state(r.engine()); rec.State != Abandoned || rec.Last == nil || rec.Last.Reason != "offer withdrawn by the hub" {
		t.Errorf("after the withdrawal: state %s, last %+v", rec.State, rec.Last)
	}
}

// TestAgentHelloAfterReconnect: when the broker drops the device, the agent
// sends its inventory again as soon as the link is back, so a hub that
// restarted or missed events learns the device's state without waiting
// for the hourly report.
func TestAgentHelloAfterReconnect(t *testing.T) {
	r := newRig(t)
	h := newHubSide(t)
	r.startAgent(h, r.engine())
	hellos := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.hellos)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		if !eventually(10*time.Second, cond) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	waitFor("the first Hello", func() bool { return hellos() >= 1 })
	before := hellos()
	waitFor("the broker to drop dev-1", func() bool { return h.broker.Kick("dev-1") })
	waitFor("a Hello after the reconnect", func() bool { return hellos() > before })
	h.mu.Lock()
	last := h.hellos[len(h.hellos)-1]
	h.mu.Unlock()
	if last.Device != "dev-1" {
		t.Errorf("Hello after reconnect from %q, want dev-1", last.Device)
	}
}

// TestAgentCancelWhileJobEnds: the hub learns "waiting-hub" before the
// job's goroutine has ended, so its cancel may find the job still
// registered; stopping the job is then not enough, the installed update
// must be abandoned too.
func TestAgentCancelWhileJobEnds(t *testing.T) {
	tests := []struct {
		name  string
		offer string // the cancel command's offer
	}{
		{"this offer", "dep-1"},
		{"any offer", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			h := newHubSide(t)
			p := r.build(spec{version: "1.1.0", security: 1, comps: []comp{image("rootfs", "1.1.0", randomBytes(7, 256<<10))}})
			stop := r.startAgent(h, r.engine())
			o := h.offer("dev-1", "dep-1", p, r.trust, transport.Policy{Reboot: transport.RebootHub}, 0)
			h.waitState(o.ID, "waiting-hub")
			stop()
			e := r.engine()
			if st := r.state(e); st.State != Rebooting {
				t.Fatalf("installed update in state %s, want %s", st.State, Rebooting)
			}

			// Not connected: what it would publish is dropped.
			a, err := NewAgent(e, HubConfig{Servers: []string{h.broker.URL()}, DeviceID: "dev-1"}, AgentOptions{Logger: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			// The job of the offer: installed, still registered, ending.
			jctx, cancel := context.WithCancelCause(context.Background())
			done := make(chan struct{})
			a.job, a.jobCancel, a.jobDone = o.ID, cancel, done
			go func() {
				defer close(done)
				<-jctx.Done()
				a.mu.Lock()
				a.job, a.jobCancel, a.jobDone = "", nil, nil
				a.mu.Unlock()
			}()
			a.onCmd(context.Background(), &transport.Cmd{ID: "c1", Op: transport.CmdCancel, Offer: tc.offer})

			if cause := context.Cause(jctx); !errors.Is(cause, errCancelled) {
				t.Errorf("job stopped with %v, want %v", cause, errCancelled)
			}
			if st := r.state(e); st.State != Abandoned || st.Bundle != nil {
				t.Errorf("after cancel: state %s, bundle %v, want %s and none", st.State, st.Bundle, Abandoned)
			}
			if bs, _ := r.boot.State(); bs.Pending != "" {
				t.Errorf("bootloader still tries %s after cancel", bs.Pending)
			}
			rec, err := a.loadOffer()
			if err != nil || rec == nil || rec.ID != o.ID || !rec.Done || rec.Result != "failed" {
				t.Errorf("offer record %+v (%v), want %s done and failed", rec, err, o.ID)
			}
			if n := r.rebootCount(); n != 0 {
				t.Errorf("rebooted %d times", n)
			}
		})
	}
}
