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
	for _, tt := range pubs {
		resp, err := a.Publish(ctx, &paho.Publish{Topic: tt.topic, QoS: 1, Payload: []byte("x")})
		ok := err == nil && resp != nil && resp.ReasonCode < 0x80
		if ok != tt.ok {
			t.Errorf("dev-a publish %s: allowed=%v (err %v), want %v", tt.topic, ok, err, tt.ok)
		}
	}
}
