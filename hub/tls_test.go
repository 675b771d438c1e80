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
)

func TestMutualTLS(t *testing.T) {
	ctx := context.Background()
	serverCA := hubtest.CA(t, "broker ca")
	server := hubtest.Leaf(t, "127.0.0.1", serverCA)
	fleetCA := hubtest.CA(t, "fleet ca")
	s := hubtest.Start(t, "", func(c *hub.Config) {
		c.MQTT.Addr = "-"
		c.MQTT.TLSAddr = "127.0.0.1:0"
		c.MQTT.TLSCert, c.MQTT.TLSKey = server.CertFile, server.KeyFile
		c.MQTT.RequireCerts = true
		c.DeviceCA = fleetCA.CertFile
	})
	if s.MQTTAddr() != "" {
		t.Errorf("plain listener %q open although disabled", s.MQTTAddr())
	}
	roots := x509.NewCertPool()
	pemCA, _ := os.ReadFile(serverCA.CertFile)
	roots.AppendCertsFromPEM(pemCA)
	dial := func(id string, c *hubtest.Cert) error {
		cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
		if c != nil {
			pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
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
	fleetDev := hubtest.Leaf(t, "dev-fleet", fleetCA)
	selfDev := hubtest.Leaf(t, "dev-self", nil)
	selfDev2 := hubtest.Leaf(t, "dev-self", nil)
	tests := []struct {
		name   string
		id     string
		cert   *hubtest.Cert
		ok     bool
		status hub.DeviceStatus
	}{
		{"fleet CA certificate is auto-accepted", "dev-fleet", fleetDev, true, hub.StatusAccepted},
		{"self-signed certificate starts pending", "dev-self", selfDev, true, hub.StatusPending},
		{"same device, same certificate", "dev-self", selfDev, true, hub.StatusPending},
		{"same name, another certificate", "dev-self", selfDev2, false, hub.StatusPending},
		{"client id differs from the common name", "dev-other", fleetDev, false, ""},
		{"no certificate", "dev-none", nil, false, ""},
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
