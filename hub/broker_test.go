package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
	"github.com/autopatcher/autopatcher/transport"
)

func connect(t *testing.T, s *hub.Server, id, password string) *hubtest.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, ack, err := hubtest.Connect(ctx, s.MQTTAddr(), id, password)
	if err != nil {
		t.Fatalf("connect %s: %v (connack %+v)", id, err, ack)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c
}

func TestBrokerAuth(t *testing.T) {
	s := hubtest.Start(t, "", func(c *hub.Config) { c.MQTT.HubPassword = "hub-secret" })
	connect(t, s, "dev-a", "pw-a").Disconnect(&paho.Disconnect{})
	tests := []struct {
		name, id, password string
		ok                 bool
	}{
		{"same credential again", "dev-a", "pw-a", true},
		{"wrong password", "dev-a", "pw-x", false},
		{"no credential", "dev-b", "", false},
		{"hub identity without its password", transport.Hub, "pw", false},
		{"hub identity with its password", transport.Hub, "hub-secret", true},
		{"invalid device id", "dev/x", "pw", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := hubtest.Connect(ctx, s.MQTTAddr(), tt.id, tt.password)
			if (err == nil) != tt.ok {
				t.Errorf("connect %s/%s: err = %v, want ok=%v", tt.id, tt.password, err, tt.ok)
			}
			if c != nil {
				c.Disconnect(&paho.Disconnect{})
			}
		})
	}
}

func TestBrokerACL(t *testing.T) {
	s := hubtest.Start(t, "", nil)
	a := connect(t, s, "dev-a", "pw-a")
	connect(t, s, "dev-b", "pw-b")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	subs := []struct {
		filter string
		ok     bool
	}{
		{"ap/v1/d/dev-a/offer", true},
		{"ap/v1/d/dev-a/data", true},
		{"ap/v1/d/dev-b/offer", false},
		{"ap/v1/d/dev-b/data", false},
		{"ap/v1/d/+/offer", false},
		{"ap/v1/#", false},
		{"ap/v1/d/dev-a/hello", false}, // hub-bound channel of its own subtree
	}
	for _, tt := range subs {
		ack, err := a.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: tt.filter, QoS: 1}}})
		ok := err == nil && ack != nil && len(ack.Reasons) == 1 && ack.Reasons[0] < 0x80
		if ok != tt.ok {
			t.Errorf("dev-a subscribe %s: allowed=%v (err %v, ack %+v), want %v", tt.filter, ok, err, ack, tt.ok)
		}
	}
	pubs := []struct {
		topic string
		ok    bool
	}{
		{"ap/v1/d/dev-a/status", true},
		{"ap/v1/d/dev-b/status", false}, // as another device
		{"ap/v1/d/dev-a/offer", false},  // as the hub
		{"ap/v1/d/dev-b/data", false},   // as the hub, to another device
		{"ap/v1/d/dev-a/cmd", false},    // as the hub
		{"somewhere/else", false},
	}
	dropped := s.Broker.Metrics.Malformed.Load()
	for _, tt := range pubs {
		resp, err := a.Publish(ctx, &paho.Publish{Topic: tt.topic, QoS: 1, Payload: []byte("x")})
		ok := err == nil && resp != nil && resp.ReasonCode < 0x80
		if ok != tt.ok {
			t.Errorf("dev-a publish %s: allowed=%v (err %v), want %v", tt.topic, ok, err, tt.ok)
		}
	}
	// The one allowed publish carried garbage: the hub dropped and counted it, and the
	// connection stays up.
	// (The broker acknowledges before it delivers to the hub, so wait for the count.)
	waitFor(t, "one malformed message counted", func() bool { return s.Broker.Metrics.Malformed.Load()-dropped == 1 })
	if _, err := a.Publish(ctx, &paho.Publish{Topic: "ap/v1/d/dev-a/status", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Errorf("connection unusable after a malformed message: %v", err)
	}
}

func TestPresence(t *testing.T) {
	ctx := context.Background()
	s := hubtest.Start(t, "", nil)
	online := func() bool {
		d, err := s.Hub.Store().Device(ctx, "dev-p")
		return err == nil && d.Online && !d.LastSeen.IsZero()
	}
	// The hub marks a device online before the broker acknowledges its connection.
	c := connect(t, s, "dev-p", "pw")
	if !online() {
		t.Error("device not online once its connection is acknowledged")
	}
	// A second connection with the same id takes the session over and the broker
	// closes the old one; neither the takeover nor the old connection's disconnect
	// may mark the device offline.
	c2 := connect(t, s, "dev-p", "pw")
	if !online() {
		t.Error("device not online once its newer connection is acknowledged")
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("older connection not closed by the takeover")
	}
	// Once the broker has finished with the old connection (its disconnect handled),
	// only the new one remains.
	waitFor(t, "old connection handled", func() bool { return s.Broker.Connections() == 1 })
	if !online() {
		t.Error("device offline although its newer connection is up")
	}
	c2.Disconnect(&paho.Disconnect{})
	waitFor(t, "last connection handled", func() bool { return s.Broker.Connections() == 0 })
	if d, err := s.Hub.Store().Device(ctx, "dev-p"); err != nil || d.Online {
		t.Errorf("device online after its last connection closed (err %v)", err)
	}
}

func TestRejectDisconnects(t *testing.T) {
	ctx := context.Background()
	s := hubtest.Start(t, "", nil)
	c := connect(t, s, "dev-r", "pw")
	waitFor(t, "dev-r online", func() bool { d, err := s.Hub.Store().Device(ctx, "dev-r"); return err == nil && d.Online })
	if err := s.Hub.SetStatus(ctx, "oscar", "dev-r", hub.StatusRejected); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("rejected device still connected")
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c2, _, err := hubtest.Connect(cctx, s.MQTTAddr(), "dev-r", "pw"); err == nil {
		c2.Disconnect(&paho.Disconnect{})
		t.Error("rejected device reconnected")
	}
}
