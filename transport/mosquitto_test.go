package transport_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/transport"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

// The same protocol through Debian's mosquitto: round trip, retained offer,
// the ACL (mirrored in mosquitto's acl_file), and a chunk transfer with a
// disconnect.
func TestMosquittoInterop(t *testing.T) {
	mq := transporttest.StartMosquitto(t, map[string]string{transport.Hub: "hub", "A": "a", "B": "b"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hub := dial(t, mq.URL(), transport.Hub, []byte("hub"))
	a := dial(t, mq.URL(), "A", []byte("a"))
	b := dial(t, mq.URL(), "B", []byte("b"))

	// Round trip and a malformed message dropped, the connection alive.
	hello := collect(t, hub, transport.Filter(transport.ChHello))
	if err := a.Publish(ctx, "ap/v1/d/A/hello", &transport.Hello{Device: "A", OfferAge: -1}); err != nil {
		t.Fatal(err)
	}
	if g := wait(t, hello); g.m.(*transport.Hello).Device != "A" {
		t.Errorf("hub got %#v", g.m)
	}
	acmd := collect(t, a, "ap/v1/d/A/cmd")
	if err := hub.PublishRaw(ctx, "ap/v1/d/A/cmd", []byte{0xc1}); err != nil {
		t.Fatal(err)
	}
	if err := hub.Publish(ctx, "ap/v1/d/A/cmd", &transport.Cmd{Op: transport.CmdReport}); err != nil {
		t.Fatal(err)
	}
	if g := wait(t, acmd); g.m.(*transport.Cmd).Op != transport.CmdReport {
		t.Errorf("A got %#v", g.m)
	}
	if got := a.Metrics().Malformed.Load(); got != 1 {
		t.Errorf("Malformed = %d, want 1", got)
	}

	// ACL: A cannot read B's subtree nor write as the hub. mosquitto grants
	// the subscription but never delivers what A may not read.
	spy := make(chan got, 8)
	for _, f := range []string{"ap/v1/d/B/cmd", "ap/v1/d/+/cmd"} {
		err := a.Subscribe(f, func(topic string, m transport.Message) { spy <- got{topic, m} })
		if err != nil && !errors.Is(err, transport.ErrRefused) {
			t.Errorf("A Subscribe(%s) = %v, want nil or ErrRefused", f, err)
		}
	}
	bcmd := collect(t, b, "ap/v1/d/B/cmd")
	if err := a.Publish(ctx, "ap/v1/d/B/cmd", &transport.Cmd{Op: transport.CmdReboot}); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("A Publish(B cmd) = %v, want ErrRefused", err)
	}
	if err := hub.Publish(ctx, "ap/v1/d/B/cmd", &transport.Cmd{Op: transport.CmdCancel}); err != nil {
		t.Fatal(err)
	}
	if g := wait(t, bcmd); g.m.(*transport.Cmd).Op != transport.CmdCancel {
		t.Errorf("B got %#v, want the hub's cancel", g.m)
	}
	none(t, bcmd, 300*time.Millisecond)
	none(t, spy, 0)

	// Retained offer and a chunk transfer with a disconnect in the middle.
	store := transporttest.NewStore()
	offers := &transport.OfferSet{}
	img := image(9, 2<<20)
	m, digest, err := store.Add("o1", build(t, "1.0.0", img), trust)
	if err != nil {
		t.Fatal(err)
	}
	offers.Add("B", "o1", time.Time{})
	srv := transport.NewServer(hub, store, offers.Offered, transport.ServeOptions{Logger: quiet})
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hub.Publish(ctx, "ap/v1/d/B/offer", &transport.Offer{ID: "o1", Digest: digest}); err != nil {
		t.Fatal(err)
	}
	offer := collect(t, b, "ap/v1/d/B/offer")
	o := wait(t, offer).m.(*transport.Offer)
	if o.ID != "o1" {
		t.Fatalf("offer = %#v", o)
	}
	f, err := transport.NewFetcher(b, "B", transport.FetchOptions{Window: 8, Timeout: 300 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Manifest(ctx, o); err != nil {
		t.Fatal(err)
	}
	// A asking for B's offer is refused by the hub.
	fa, err := transport.NewFetcher(a, "A", transport.FetchOptions{Window: 8, Timeout: 300 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Manifest(ctx, o); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("A fetching B's offer = %v, want ErrRefused", err)
	}
	out := sink(t)
	comp := &m.Components[0]
	var kicked bool
	done := &transporttest.Progress{}
	done.OnMark = func(k int) {
		if k == len(comp.Chunks)/2 && !kicked {
			kicked = true
			b.Drop()
		}
	}
	if err := f.Fetch(ctx, transport.Request{Offer: o.ID, Digest: o.Digest, Comp: comp, Sink: out, Done: done}); err != nil {
		t.Fatal(err)
	}
	if !kicked {
		t.Error("no disconnect happened")
	}
	if !bytes.Equal(contents(t, out), img) {
		t.Error("slot differs from the image")
	}
}
