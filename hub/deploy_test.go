package hub_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
	"github.com/autopatcher/autopatcher/transport"
)

// fakeDevice is a device speaking the protocol through transport.Conn, with no engine:
// it fetches and verifies an offered bundle and reports the steps an engine would.
type fakeDevice struct {
	t      *testing.T
	id     string
	conn   *transport.Conn
	offers chan *transport.Offer
	data   chan *transport.Data
}

func newFakeDevice(t *testing.T, s *hub.Server, id string) *fakeDevice {
	t.Helper()
	return newFakeDeviceURL(t, "mqtt://"+s.MQTTAddr(), id)
}

func newFakeDeviceURL(t *testing.T, url, id string) *fakeDevice {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := transport.Dial(ctx, transport.Config{
		Servers: []string{url}, AllowPlain: true,
		ClientID: id, Username: id, Password: []byte("secret-" + id),
		Logger: discard(),
	})
	if err != nil {
		t.Fatalf("dial %s: %v", id, err)
	}
	t.Cleanup(func() { conn.Close() })
	d := &fakeDevice{t: t, id: id, conn: conn, offers: make(chan *transport.Offer, 8), data: make(chan *transport.Data, 1024)}
	sub := func(ch transport.Channel, fn transport.Handler) {
		topic, _ := transport.Topic(id, ch)
		if err := conn.Subscribe(topic, fn); err != nil {
			t.Fatalf("subscribe %s: %v", topic, err)
		}
	}
	sub(transport.ChOffer, func(_ string, m transport.Message) { d.offers <- m.(*transport.Offer) })
	sub(transport.ChData, func(_ string, m transport.Message) { d.data <- m.(*transport.Data) })
	return d
}

func (d *fakeDevice) send(m transport.Message) {
	d.t.Helper()
	topic, _ := transport.Topic(d.id, transport.ChannelOf(m))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.conn.Publish(ctx, topic, m); err != nil {
		d.t.Fatalf("%s publish: %v", d.id, err)
	}
}

func (d *fakeDevice) hello(hw string) {
	d.send(&transport.Hello{Device: d.id, Hardware: hw, Daemon: "test",
		Slots:      []transport.SlotInfo{{Class: "rootfs", Name: "A", Version: "0.9.0", Booted: true}, {Class: "rootfs", Name: "B"}},
		Components: []transport.Installed{{Name: "c0", Version: "0.9.0"}}})
}

func (d *fakeDevice) nextData() *transport.Data {
	d.t.Helper()
	select {
	case m := <-d.data:
		return m
	case <-time.After(10 * time.Second):
		d.t.Fatalf("%s: no data from the hub", d.id)
	}
	return nil
}

func (d *fakeDevice) nextOffer() *transport.Offer {
	d.t.Helper()
	select {
	case m := <-d.offers:
		return m
	case <-time.After(10 * time.Second):
		d.t.Fatalf("%s: no offer from the hub", d.id)
	}
	return nil
}

// fetch downloads and verifies the whole bundle of offer; it returns the payloads.
func (d *fakeDevice) fetch(o *transport.Offer, trust *bundle.Trust) [][]byte {
	d.t.Helper()
	d.send(&transport.Get{Offer: o.ID, Digest: o.Digest, Manifest: true, Seq: 1})
	md := d.nextData()
	if md.Err != "" || !md.Manifest {
		d.t.Fatalf("manifest request answered %+v", md)
	}
	m, err := bundle.VerifyManifest(md.Bytes, trust)
	if err != nil {
		d.t.Fatalf("verify manifest: %v", err)
	}
	var out [][]byte
	for ci := range m.Components {
		c := &m.Components[ci]
		got := make([][]byte, len(c.Chunks))
		for base := 0; base < len(c.Chunks); base += 16 {
			bits := make([]byte, 2)
			n := min(16, len(c.Chunks)-base)
			for i := 0; i < n; i++ {
				bits[i/8] |= 1 << (i % 8)
			}
			d.send(&transport.Get{Offer: o.ID, Digest: o.Digest, Comp: uint32(ci), Base: uint32(base), Bitmap: bits, Window: 16, Seq: 2})
			for i := 0; i < n; i++ {
				dm := d.nextData()
				if dm.Err != "" {
					d.t.Fatalf("chunk request answered %s: %s", dm.Err, dm.Detail)
				}
				plain, err := c.VerifyChunk(int(dm.Index), dm.Bytes)
				if err != nil {
					d.t.Fatalf("verify chunk: %v", err)
				}
				got[dm.Index] = plain
			}
		}
		out = append(out, bytes.Join(got, nil))
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPendingAcceptDeploy(t *testing.T) {
	ctx := context.Background()
	key, vpub, pub := hubtest.Key(t)
	trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
	s := hubtest.Start(t, pub, nil)
	api := newAPIClient(t, s)
	payload := hubtest.Payload(3, 700<<10)
	if code, body := api.do("POST", "/api/v1/bundles", hubtest.OperatorToken, hubtest.Bundle(t, key, "app", "1.0.0", payload)); code != http.StatusCreated {
		t.Fatalf("upload: %d %s", code, body)
	}

	dev := newFakeDevice(t, s, "dev-1")
	dev.hello("sim")
	var d *hub.Device
	waitFor(t, "hello stored", func() bool {
		var err error
		d, err = s.Hub.Store().Device(ctx, "dev-1")
		return err == nil && d.Hardware == "sim"
	})
	if d.Status != hub.StatusPending || !d.Online || d.Inventory.Slots["rootfs/A"] != "0.9.0" || d.Inventory.Booted != "A" {
		t.Errorf("after hello: %+v", d)
	}

	// A pending device gets no offer.
	if _, err := s.Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "app", Version: "1.0.0", Device: "dev-1"}); !errors.Is(err, hub.ErrBadRequest) {
		t.Fatalf("Deploy(pending device) = %v, want ErrBadRequest", err)
	}
	if code, body := api.do("POST", "/api/v1/devices/dev-1/accept", hubtest.OperatorToken, nil); code != http.StatusOK {
		t.Fatalf("accept: %d %s", code, body)
	}
	code, body := api.do("POST", "/api/v1/deployments", hubtest.OperatorToken, []byte(`{"bundle":"app","version":"1.0.0","device":"dev-1"}`))
	if code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	offer := dev.nextOffer()
	if offer.Bundle != "app" || offer.Version != "1.0.0" || offer.ID == "" {
		t.Fatalf("offer = %+v", offer)
	}

	// Another device cannot fetch what was offered to dev-1.
	other := newFakeDevice(t, s, "dev-2")
	other.hello("sim")
	waitFor(t, "dev-2 registered", func() bool { _, err := s.Hub.Store().Device(ctx, "dev-2"); return err == nil })
	s.Hub.SetStatus(ctx, "oscar", "dev-2", hub.StatusAccepted)
	other.send(&transport.Get{Offer: offer.ID, Digest: offer.Digest, Manifest: true})
	if dm := other.nextData(); dm.Err != transport.KindNotOffered || len(dm.Bytes) != 0 {
		t.Errorf("dev-2 fetching dev-1's offer got %+v, want not-offered", dm)
	}
	other.send(&transport.Get{Offer: offer.ID, Digest: offer.Digest, Comp: 0, Bitmap: []byte{1}})
	if dm := other.nextData(); dm.Err != transport.KindNotOffered || len(dm.Bytes) != 0 {
		t.Errorf("dev-2 fetching a chunk of dev-1's offer got err %q and %d bytes, want not-offered", dm.Err, len(dm.Bytes))
	}

	got := dev.fetch(offer, trust)
	if len(got) != 1 || !bytes.Equal(got[0], payload) {
		t.Fatalf("fetched payload differs from the uploaded one")
	}
	for _, st := range []string{"downloading", "installing", "rebooting", "trial"} {
		dev.send(&transport.Status{State: st, Offer: offer.ID, Bundle: "app@1.0.0"})
	}
	dev.send(&transport.Status{State: "idle", Offer: offer.ID, Result: "success"})

	var dep *hub.Deployment
	waitFor(t, "deployment to finish", func() bool {
		deps, _ := s.Hub.Store().Deployments(ctx, "dev-1", false)
		if len(deps) == 0 {
			return false
		}
		dep, _ = s.Hub.Store().Deployment(ctx, deps[0].ID)
		return hub.Final(dep.State)
	})
	var states []string
	for _, st := range dep.Steps {
		states = append(states, st.State)
	}
	want := "offered downloading installing rebooting trial idle succeeded"
	if got := strings.Join(states, " "); got != want {
		t.Errorf("recorded steps = %q, want %q", got, want)
	}
	if d, _ := s.Hub.Store().Device(ctx, "dev-1"); d.LastResult != hub.DeploySucceeded {
		t.Errorf("device last result = %q", d.LastResult)
	}
	// A finished deployment's offer is withdrawn: a new subscriber finds none.
	dev.conn.Close()
	dev2 := newFakeDevice(t, s, "dev-1")
	select {
	case o := <-dev2.offers:
		if o.ID != "" {
			t.Errorf("offer still retained after the deployment finished: %+v", o)
		}
	case <-time.After(300 * time.Millisecond):
	}
	waitFor(t, "audit", func() bool { return hub.VerifyStoreAudit(ctx, s.Hub.Store()) == nil })
}

func TestDeploySupersedes(t *testing.T) {
	ctx := context.Background()
	key, _, pub := hubtest.Key(t)
	s := hubtest.Start(t, pub, nil)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if _, _, err := s.Hub.Upload(ctx, "oscar", bytes.NewReader(hubtest.Bundle(t, key, "app", v, hubtest.Payload(1, 50<<10))), 0); err != nil {
			t.Fatal(err)
		}
	}
	dev := newFakeDevice(t, s, "dev-s")
	dev.hello("sim")
	waitFor(t, "registered", func() bool { _, err := s.Hub.Store().Device(ctx, "dev-s"); return err == nil })
	s.Hub.SetStatus(ctx, "oscar", "dev-s", hub.StatusAccepted)
	first, err := s.Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "app", Version: "1.0.0", Device: "dev-s"})
	if err != nil {
		t.Fatal(err)
	}
	o1 := dev.nextOffer()
	second, err := s.Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "app", Version: "1.1.0", Device: "dev-s"})
	if err != nil {
		t.Fatal(err)
	}
	if o2 := dev.nextOffer(); o2.Version != "1.1.0" || o2.ID == o1.ID {
		t.Errorf("second offer = %+v", o2)
	}
	if d, _ := s.Hub.Store().Deployment(ctx, first.ID); d.State != hub.DeployCancelled {
		t.Errorf("first deployment %s, want cancelled", d.State)
	}
	if d, _ := s.Hub.Store().Deployment(ctx, second.ID); d.State != hub.DeployOffered {
		t.Errorf("second deployment %s, want offered", d.State)
	}
	// The superseded offer is no longer served; its bundle can be deleted, the active one cannot.
	dev.send(&transport.Get{Offer: o1.ID, Digest: o1.Digest, Manifest: true})
	if dm := dev.nextData(); dm.Err != transport.KindNotOffered {
		t.Errorf("superseded offer answered %+v, want not-offered", dm)
	}
	if err := s.Hub.DeleteBundle(ctx, "alice", "app", "1.0.0"); err != nil {
		t.Errorf("delete superseded bundle: %v", err)
	}
	if err := s.Hub.DeleteBundle(ctx, "alice", "app", "1.1.0"); !errors.Is(err, hub.ErrInUse) {
		t.Errorf("delete bundle of the active deployment = %v, want ErrInUse", err)
	}
}
