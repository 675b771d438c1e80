package transport_test

import (
	"context"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/transport"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

func TestMTLS(t *testing.T) {
	ca := transporttest.NewCA(t)
	scrt, skey := ca.Issue(t, "127.0.0.1", true)
	srvTLS, err := (&transport.TLSSettings{CA: ca.Cert, Cert: scrt, Key: skey}).ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	b := transporttest.StartTLS(t, srvTLS)
	tlsDial := func(id string, s *transport.TLSSettings, timeout time.Duration) (*transport.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return transport.Dial(ctx, transport.Config{Servers: []string{b.URL()}, ClientID: id, TLS: s,
			MinBackoff: 20 * time.Millisecond, Logger: quiet})
	}
	cert := func(cn string) *transport.TLSSettings {
		c, k := ca.Issue(t, cn, false)
		return &transport.TLSSettings{CA: ca.Cert, Cert: c, Key: k}
	}

	hub, err := tlsDial(transport.Hub, cert(transport.Hub), 10*time.Second)
	if err != nil {
		t.Fatalf("hub Dial: %v", err)
	}
	defer hub.Close()
	dev, err := tlsDial("A", cert("A"), 10*time.Second)
	if err != nil {
		t.Fatalf("device Dial: %v", err)
	}
	defer dev.Close()
	hello := collect(t, hub, transport.Filter(transport.ChHello))
	if err := dev.Publish(context.Background(), "ap/v1/d/A/hello", &transport.Hello{Device: "A"}); err != nil {
		t.Fatal(err)
	}
	if g := wait(t, hello); g.topic != "ap/v1/d/A/hello" {
		t.Errorf("hub got %s", g.topic)
	}

	// Refused: B's certificate used as A, no client certificate, an unknown CA.
	other := transporttest.NewCA(t)
	oc, ok := other.Issue(t, "A", false)
	for name, s := range map[string]*transport.TLSSettings{
		"certificate of another device": cert("B"),
		"no client certificate":         {CA: ca.Cert},
		"certificate from another CA":   {CA: ca.Cert, Cert: oc, Key: ok},
	} {
		if c, err := tlsDial("A", s, 500*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("%s: Dial succeeded", name)
		}
	}
	// A client that does not trust the broker's CA refuses it.
	if c, err := tlsDial("A", &transport.TLSSettings{CA: other.Cert}, 500*time.Millisecond); err == nil {
		c.Close()
		t.Error("Dial trusting another CA succeeded")
	}
}
