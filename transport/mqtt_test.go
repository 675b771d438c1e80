package transport_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/transport"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

var quiet = func() *slog.Logger {
	if os.Getenv("TRANSPORT_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}()

// dial connects id to url with password pw, closed at the end of the test.
func dial(t testing.TB, url, id string, pw []byte) *transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, transport.Config{
		Servers: []string{url}, ClientID: id, Username: id, Password: pw,
		AllowPlain: true, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: quiet,
	})
	if err != nil {
		t.Fatalf("Dial(%s): %v", id, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type got struct {
	topic string
	m     transport.Message
}

func collect(t *testing.T, c *transport.Conn, filter string) chan got {
	t.Helper()
	ch := make(chan got, 64)
	if err := c.Subscribe(filter, func(topic string, m transport.Message) { ch <- got{topic, m} }); err != nil {
		t.Fatalf("Subscribe(%s): %v", filter, err)
	}
	return ch
}

func wait(t *testing.T, ch chan got) got {
	t.Helper()
	select {
	case g := <-ch:
		return g
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return got{}
}

func none(t *testing.T, ch chan got, d time.Duration) {
	t.Helper()
	select {
	case g := <-ch:
		t.Errorf("unexpected message on %s: %#v", g.topic, g.m)
	case <-time.After(d):
	}
}

func topic(t *testing.T, dev string, c transport.Channel) string {
	t.Helper()
	s, err := transport.Topic(dev, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConnRoundTrip(t *testing.T) {
	b := transporttest.Start(t)
	b.Add(transport.Hub, []byte("hubpw"))
	b.Add("dev1", []byte("pw1"))
	hub := dial(t, b.URL(), transport.Hub, []byte("hubpw"))
	dev := dial(t, b.URL(), "dev1", []byte("pw1"))
	ctx := context.Background()

	hello := collect(t, hub, transport.Filter(transport.ChHello))
	cmd := collect(t, dev, topic(t, "dev1", transport.ChCmd))

	h := &transport.Hello{V: transport.Version, Device: "dev1", Hardware: "rpi4", Daemon: "1.0", OfferAge: -1,
		Components: []transport.Installed{{Name: "rootfs", Version: "1.0.0"}}}
	if err := dev.Publish(ctx, topic(t, "dev1", transport.ChHello), h); err != nil {
		t.Fatal(err)
	}
	g := wait(t, hello)
	if g.topic != "ap/v1/d/dev1/hello" || !reflect.DeepEqual(g.m, h) {
		t.Errorf("hub got %s %#v, want %#v", g.topic, g.m, h)
	}

	// Malformed payloads are dropped and counted; the connection stays up.
	if err := hub.PublishRaw(ctx, topic(t, "dev1", transport.ChCmd), []byte("\xc1garbage")); err != nil {
		t.Fatal(err)
	}
	future, _ := transport.Encode(&transport.Cmd{V: transport.Version + 1, Op: "reboot"})
	if err := hub.PublishRaw(ctx, topic(t, "dev1", transport.ChCmd), future); err != nil {
		t.Fatal(err)
	}
	c := &transport.Cmd{V: transport.Version, ID: "c1", Op: transport.CmdReboot}
	if err := hub.Publish(ctx, topic(t, "dev1", transport.ChCmd), c); err != nil {
		t.Fatal(err)
	}
	g = wait(t, cmd)
	if !reflect.DeepEqual(g.m, c) {
		t.Errorf("device got %#v, want %#v", g.m, c)
	}
	if got := dev.Metrics().Malformed.Load(); got != 2 {
		t.Errorf("Malformed = %d, want 2", got)
	}
	if got := dev.Metrics().Received.Load(); got != 1 {
		t.Errorf("Received = %d, want 1", got)
	}
	// Still alive after the garbage: another round trip.
	if err := dev.Publish(ctx, topic(t, "dev1", transport.ChHello), h); err != nil {
		t.Fatal(err)
	}
	wait(t, hello)

	// Wrong message type for the topic is refused before sending.
	if err := dev.Publish(ctx, topic(t, "dev1", transport.ChStatus), h); !errors.Is(err, transport.ErrTopic) {
		t.Errorf("Publish(hello on status) = %v, want ErrTopic", err)
	}
}

// An offer is retained: a device that connects later finds the latest one
// only, and a cleared offer arrives as an empty Offer.
func TestOfferRetained(t *testing.T) {
	b := transporttest.Start(t)
	b.Add(transport.Hub, []byte("h"))
	b.Add("dev2", []byte("p"))
	hub := dial(t, b.URL(), transport.Hub, []byte("h"))
	ctx := context.Background()
	ot := topic(t, "dev2", transport.ChOffer)
	for _, id := range []string{"o1", "o2"} {
		if err := hub.Publish(ctx, ot, &transport.Offer{ID: id, Bundle: "app", Version: "1.0." + id[1:]}); err != nil {
			t.Fatal(err)
		}
	}
	dev := dial(t, b.URL(), "dev2", []byte("p"))
	offers := collect(t, dev, ot)
	if g := wait(t, offers); g.m.(*transport.Offer).ID != "o2" {
		t.Errorf("retained offer = %q, want o2", g.m.(*transport.Offer).ID)
	}
	if err := hub.ClearOffer(ctx, "dev2"); err != nil {
		t.Fatal(err)
	}
	// The latest offer may come again (after a resubscribe), the older never.
	for {
		g := wait(t, offers)
		id := g.m.(*transport.Offer).ID
		if id == "" {
			break
		}
		if id != "o2" {
			t.Fatalf("offer %q after o2", id)
		}
	}

	// A device that restarts (new process, same persistent session) finds
	// the offer published while it was away.
	dev.Close()
	if err := hub.Publish(ctx, ot, &transport.Offer{ID: "o3"}); err != nil {
		t.Fatal(err)
	}
	dev = dial(t, b.URL(), "dev2", []byte("p"))
	offers = collect(t, dev, ot)
	if g := wait(t, offers); g.m.(*transport.Offer).ID != "o3" {
		t.Errorf("offer after restart = %q, want o3", g.m.(*transport.Offer).ID)
	}
}

func TestACL(t *testing.T) {
	b := transporttest.Start(t)
	b.Add(transport.Hub, []byte("h"))
	b.Add("A", []byte("a"))
	b.Add("B", []byte("b"))
	hub := dial(t, b.URL(), transport.Hub, []byte("h"))
	a := dial(t, b.URL(), "A", []byte("a"))
	bb := dial(t, b.URL(), "B", []byte("b"))
	ctx := context.Background()

	// A may not subscribe to B's topics, nor with wildcards.
	for _, f := range []string{"ap/v1/d/B/cmd", "ap/v1/d/B/offer", "ap/v1/d/B/data", "ap/v1/d/+/offer", "ap/v1/#"} {
		if err := a.Subscribe(f, func(string, transport.Message) {}); !errors.Is(err, transport.ErrRefused) {
			t.Errorf("A Subscribe(%s) = %v, want ErrRefused", f, err)
		}
	}
	// A publishing as the hub (to B's cmd, to its own cmd/offer) or as B never arrives.
	bcmd := collect(t, bb, topic(t, "B", transport.ChCmd))
	acmd := collect(t, a, topic(t, "A", transport.ChCmd))
	hello := collect(t, hub, transport.Filter(transport.ChHello))
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, tt := range []struct {
		topic string
		m     transport.Message
	}{
		{"ap/v1/d/B/cmd", &transport.Cmd{Op: transport.CmdReboot}},
		{"ap/v1/d/A/cmd", &transport.Cmd{Op: transport.CmdReboot}},
		{"ap/v1/d/B/hello", &transport.Hello{Device: "B"}},
	} {
		// An MQTT v5 broker answers a refused QoS 1 publish with a failure
		// reason code, and delivers nothing.
		if err := a.Publish(short, tt.topic, tt.m); !errors.Is(err, transport.ErrRefused) {
			t.Errorf("A Publish(%s) = %v, want ErrRefused", tt.topic, err)
		}
	}
	none(t, bcmd, 300*time.Millisecond)
	none(t, acmd, 0)
	none(t, hello, 0)
	if b.Denied() < 8 {
		t.Errorf("broker denied %d checks, want at least 8", b.Denied())
	}
	// A wrong password is refused at connect.
	dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer dcancel()
	if c, err := transport.Dial(dctx, transport.Config{Servers: []string{b.URL()}, ClientID: "B", Username: "B", Password: []byte("a"), AllowPlain: true, Logger: quiet}); err == nil {
		c.Close()
		t.Error("Dial with A's password as B succeeded")
	}
	// The legitimate paths still work.
	if err := hub.Publish(ctx, "ap/v1/d/B/cmd", &transport.Cmd{Op: transport.CmdReport}); err != nil {
		t.Fatal(err)
	}
	if g := wait(t, bcmd); g.m.(*transport.Cmd).Op != transport.CmdReport {
		t.Errorf("B got %#v", g.m)
	}
}

func TestDialConfigErrors(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []transport.Config{
		{ClientID: "d"},
		{Servers: []string{"mqtt://127.0.0.1:1"}, ClientID: "d"}, // plain not allowed
		{Servers: []string{"http://127.0.0.1:1"}, ClientID: "d", AllowPlain: true},
		{Servers: []string{"mqtts://127.0.0.1:1"}, ClientID: "bad/id"},
		{Servers: []string{"mqtts://127.0.0.1:1"}, ClientID: "d", TLS: &transport.TLSSettings{CA: "/nonexistent"}},
	} {
		if c, err := transport.Dial(ctx, cfg); err == nil {
			c.Close()
			t.Errorf("Dial(%+v) succeeded", cfg)
		}
	}
}

// A command sent while the device was away is delivered from its persistent
// session when it comes back, even though it arrives before Subscribe.
func TestQueuedWhileAway(t *testing.T) {
	b := transporttest.Start(t)
	b.Add(transport.Hub, []byte("h"))
	b.Add("dev3", []byte("p"))
	hub := dial(t, b.URL(), transport.Hub, []byte("h"))
	ctx := context.Background()
	ct := topic(t, "dev3", transport.ChCmd)
	dev := dial(t, b.URL(), "dev3", []byte("p"))
	cmds := collect(t, dev, ct)
	dev.Close()
	if err := hub.Publish(ctx, ct, &transport.Cmd{ID: "while-away", Op: transport.CmdReport}); err != nil {
		t.Fatal(err)
	}
	dev = dial(t, b.URL(), "dev3", []byte("p"))
	time.Sleep(100 * time.Millisecond) // let the session's queue arrive first
	cmds = collect(t, dev, ct)
	if g := wait(t, cmds); g.m.(*transport.Cmd).ID != "while-away" {
		t.Errorf("got %#v, want the queued command", g.m)
	}
}
