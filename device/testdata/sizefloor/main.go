// Command sizefloor links what autopatchd cannot do without and none of
// its own code: a YAML config, slog, an MQTT v5 client over mutual TLS
// (paho.golang), msgp messages, CBOR and COSE_Sign1 verification, a zstd
// decoder and the hardware watchdog (u-root). Its stripped size is the
// floor under autopatchd's; BenchmarkInstall builds it with autopatchd's
// flags and reports it beside the daemon (arm7-floor-MiB). It is never
// run.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/eclipse/paho.golang/paho"
	"github.com/fxamacker/cbor/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/tinylib/msgp/msgp"
	"github.com/u-root/u-root/pkg/watchdog"
	"github.com/veraison/go-cose"
	"gopkg.in/yaml.v3"
)

type config struct {
	Broker string `yaml:"broker"`
	Cert   string `yaml:"cert"`
	Key    string `yaml:"key"`
	CA     string `yaml:"ca"`
}

type manifest struct {
	Name    string `cbor:"1,keyasint"`
	Version string `cbor:"2,keyasint"`
	Chunks  []struct {
		Length uint32 `cbor:"1,keyasint"`
		SHA256 []byte `cbor:"2,keyasint"`
	} `cbor:"3,keyasint"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var c config
	if err := yaml.NewDecoder(os.Stdin).Decode(&c); err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(c.CA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := (&tls.Dialer{Config: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}).DialContext(ctx, "tcp", c.Broker)
	if err != nil {
		return err
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(p paho.PublishReceived) (bool, error) {
			s, _, err := msgp.ReadStringBytes(p.Packet.Payload)
			log.Info("message", "topic", p.Packet.Topic, "text", s, "err", err)
			return true, nil
		},
	}})
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: "floor", KeepAlive: 30}); err != nil {
		return err
	}
	if _, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "floor/#", QoS: 1}}}); err != nil {
		return err
	}
	if _, err := cl.Publish(ctx, &paho.Publish{Topic: "floor", Payload: msgp.AppendString(nil, "up"), QoS: 1}); err != nil {
		return err
	}

	signed, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(signed); err != nil {
		return err
	}
	verifier, err := cose.NewVerifier(cose.AlgorithmEdDSA, cert.Leaf.PublicKey)
	if err != nil {
		return err
	}
	if err := msg.Verify(nil, verifier); err != nil {
		return err
	}
	dm, err := cbor.DecOptions{MaxArrayElements: 1 << 20}.DecMode()
	if err != nil {
		return err
	}
	var m manifest
	if err := dm.Unmarshal(msg.Payload, &m); err != nil {
		return err
	}
	d, err := zstd.NewReader(nil)
	if err != nil {
		return err
	}
	plain, err := d.DecodeAll(signed, nil)
	if err != nil {
		return err
	}
	log.Info("bundle", "name", m.Name, "bytes", len(plain))

	wd, err := watchdog.Open(watchdog.Dev)
	if err != nil {
		return err
	}
	defer wd.MagicClose()
	return wd.KeepAlive()
}
