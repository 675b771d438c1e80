package hub_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

func TestMutualTLS(t *testing.T) {
	ctx := context.Background()
	serverCA := transporttest.NewNamedCA(t, "broker ca")
	serverCert, serverKey := serverCA.IssueDual(t, "127.0.0.1")
	fleetCA := transporttest.NewNamedCA(t, "fleet ca")
	s := hubtest.Start(t, "", func(c *hub.Config) {
		c.MQTT.Addr = "-"
		c.MQTT.TLSAddr = "127.0.0.1:0"
		c.MQTT.TLSCert, c.MQTT.TLSKey = serverCert, serverKey
		c.MQTT.RequireCerts = true
		c.DeviceCA = fleetCA.Cert
	})
	if s.MQTTAddr() != "" {
		t.Errorf("plain listener %q open although disabled", s.MQTTAddr())
	}
	roots := x509.NewCertPool()
	pemCA, _ := os.ReadFile(serverCA.Cert)
	roots.AppendCertsFromPEM(pemCA)
	// leaf is a client certificate's files; the zero leaf is no certificate.
	type leaf struct{ cert, key string }
	dial := func(id string, c leaf) error {
		cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
		if c.cert != "" {
			pair, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		conn, err := tls.Dial("tcp", s.MQTTTLSAddr(), cfg)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		cl, _, err := hubtest.ConnectConn(cctx, conn, id, "")
		if err == nil {
			cl.Disconnect(&paho.Disconnect{})
		}
		return err
	}
	var fleetDev, selfDev, selfDev2 leaf
	fleetDev.cert, fleetDev.key = fleetCA.IssueDual(t, "dev-fleet")
	selfDev.cert, selfDev.key = transporttest.SelfSigned(t, "dev-self")
	selfDev2.cert, selfDev2.key = transporttest.SelfSigned(t, "dev-self")
	tests := []struct {
		name   string
		id     string
		cert   leaf
		ok     bool
		status hub.DeviceStatus
	}{
		{"fleet CA certificate is auto-accepted", "dev-fleet", fleetDev, true, hub.StatusAccepted},
		{"self-signed certificate starts pending", "dev-self", selfDev, true, hub.StatusPending},
		{"same device, same certificate", "dev-self", selfDev, true, hub.StatusPending},
		{"same name, another certificate", "dev-self", selfDev2, false, hub.StatusPending},
		{"client id differs from the common name", "dev-other", fleetDev, false, ""},
		{"no certificate", "dev-none", leaf{}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := dial(tt.id, tt.cert)
			if (err == nil) != tt.ok {
				t.Fatalf("connect %s: %v, want ok=%v", tt.id, err, tt.ok)
			}
			d, err := s.Hub.Store().Device(ctx, tt.id)
			if tt.status == "" {
				if err == nil {
					t.Errorf("refused client %s was registered: %+v", tt.id, d)
				}
				return
			}
			if err != nil || d.Status != tt.status {
				t.Errorf("device %s = %+v, %v; want status %s", tt.id, d, err, tt.status)
			}
		})
	}
}
