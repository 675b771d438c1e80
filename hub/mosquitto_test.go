package hub_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
	"github.com/autopatcher/autopatcher/transport"
)

// TestExternalMosquitto runs the hub against Debian's mosquitto with the shipped
// ACL: registration by Hello, the ACL, and a deployment end to end.
func TestExternalMosquitto(t *testing.T) {
	ctx := context.Background()
	url := hubtest.Mosquitto(t, "../docs/mosquitto/acl", map[string]string{
		transport.Hub: "hub-secret", "dev-1": "secret-dev-1", "dev-2": "secret-dev-2",
	})
	key, vpub, pub := hubtest.Key(t)
	s := hubtest.Start(t, pub, func(c *hub.Config) {
		c.MQTT.Broker = url
		c.MQTT.HubPassword = "hub-secret"
	})
	if s.Broker != nil {
		t.Fatal("embedded broker running although an external one is configured")
	}
	api := newAPIClient(t, s)
	payload := hubtest.Payload(5, 300<<10)
	if code, body := api.do("POST", "/api/v1/bundles", hubtest.OperatorToken, hubtest.Bundle(t, key, "app", "2.0.0", payload)); code != http.StatusCreated {
		t.Fatalf("upload: %d %s", code, body)
	}

	dev := newFakeDeviceURL(t, url, "dev-1")
	dev.hello("sim")
	waitFor(t, "dev-1 registered by its hello", func() bool {
		d, err := s.Hub.Store().Device(ctx, "dev-1")
		return err == nil && d.Status == hub.StatusPending && d.Hardware == "sim"
	})

	// mosquitto applies the shipped ACL: dev-2 cannot read dev-1's offers or pose as the hub.
	host := url[len("mqtt://"):]
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c2, _, err := hubtest.Connect(cctx, host, "dev-2", "secret-dev-2")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Disconnect(&paho.Disconnect{})
	// mosquitto grants the subscription but filters at delivery; what counts is
	// that nothing of dev-1's arrives (checked after dev-1 got its offer below).
	if _, err := c2.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "ap/v1/d/dev-1/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	if err := s.Hub.SetStatus(ctx, "oscar", "dev-1", hub.StatusAccepted); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "app", Version: "2.0.0", Device: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	offer := dev.nextOffer()
	if offer.ID == "" || offer.Bundle != "app" {
		t.Fatalf("dev-1's first offer = %+v, want the hub's", offer)
	}
	got := dev.fetch(offer, &bundle.Trust{Keys: []bundle.PublicKey{vpub}})
	if len(got) != 1 || string(got[0]) != string(payload) {
		t.Fatal("payload fetched through mosquitto differs")
	}
	dev.send(&transport.Status{State: "installing", Offer: offer.ID})
	dev.send(&transport.Status{State: "idle", Offer: offer.ID, Result: "rollback", Kind: transport.KindHealth})
	waitFor(t, "rollback recorded", func() bool {
		d, err := s.Hub.Store().Deployment(ctx, 1)
		return err == nil && d.State == hub.DeployRolledBack
	})
	select {
	case p := <-c2.Received:
		t.Errorf("dev-2 received %s, a message of dev-1's subtree", p.Topic)
	default:
	}
}
