// Package transporttest provides test doubles for the transport package: an
// embedded MQTT broker (mochi-mqtt) on loopback that authenticates clients by
// per-device credentials and enforces transport.Allowed, and a helper that
// runs Debian's mosquitto with the same rules.
package transporttest

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/autopatcher/autopatcher/transport"
)

// Broker is an embedded MQTT broker listening on 127.0.0.1. A client must
// connect with user name = client id and the password registered for it with
// Add; it may then publish and subscribe as transport.Allowed says.
type Broker struct {
	Addr string // host:port, fixed across Restart
	tls  *tls.Config

	mu    sync.Mutex
	srv   *mqtt.Server
	creds map[string][]byte
	// Denied counts ACL refusals.
	denied int
}

// Start starts a broker on a free loopback port; it is closed at the end of
// the test.
func Start(t testing.TB) *Broker {
	t.Helper()
	b := &Broker{creds: map[string][]byte{}}
	if err := b.start("127.0.0.1:0"); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(b.Stop)
	return b
}

// StartTLS starts a broker whose listener speaks TLS with cfg (from
// transport.TLSSettings.ServerConfig). A client that presents a verified
// certificate is identified by its common name (transport.ClientIdentity),
// which must equal its client id; no password is needed then.
func StartTLS(t testing.TB, cfg *tls.Config) *Broker {
	t.Helper()
	b := &Broker{creds: map[string][]byte{}, tls: cfg}
	if err := b.start("127.0.0.1:0"); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(b.Stop)
	return b
}

// URL is the broker's mqtt:// or mqtts:// URL.
func (b *Broker) URL() string {
	if b.tls != nil {
		return "mqtts://" + b.Addr
	}
	return "mqtt://" + b.Addr
}

// Add registers a client id (device id or transport.Hub) with its password.
func (b *Broker) Add(clientID string, password []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.creds[clientID] = append([]byte(nil), password...)
}

// Denied returns how many ACL checks the broker refused.
func (b *Broker) Denied() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.denied
}

func (b *Broker) start(addr string) error {
	srv := mqtt.New(&mqtt.Options{
		InlineClient: false,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		// A chunk is up to 256 KiB: with mochi's 2 KiB default buffers one
		// PUBLISH costs dozens of reads and writes. 64 KiB per client and
		// direction is little for a test broker (a hub with thousands of
		// idle devices may want less).
		ClientNetReadBufferSize:  64 << 10,
		ClientNetWriteBufferSize: 64 << 10,
	})
	srv.Options.Capabilities.MaximumSessionExpiryInterval = 3600
	if err := srv.AddHook(&hook{b: b}, nil); err != nil {
		return err
	}
	var err error
	for i := 0; i < 50; i++ { // the port may still be held by the previous server
		l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr, TLSConfig: b.tls})
		if err = srv.AddListener(l); err == nil {
			b.Addr = l.Address()
			break
		}
		srv.Listeners.Delete("tcp")
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	return nil
}

// Stop closes the broker and every client connection. Sessions and retained
// messages are lost (the broker keeps them in memory).
func (b *Broker) Stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Restart stops the broker and starts a new one on the same address.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.Stop()
	if err := b.start(b.Addr); err != nil {
		t.Fatalf("restart broker: %v", err)
	}
}

// Kick drops the network connection of clientID, as a flaky link would.
// It reports whether the client was connected.
func (b *Broker) Kick(clientID string) bool {
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if srv == nil {
		return false
	}
	cl, ok := srv.Clients.Get(clientID)
	if !ok || cl.Closed() {
		return false
	}
	cl.Stop(fmt.Errorf("kicked by test"))
	return true
}

// Publish injects a raw message from the broker itself, bypassing the ACL.
func (b *Broker) Publish(topic string, payload []byte, retain bool) error {
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if srv == nil {
		return net.ErrClosed
	}
	return srv.Publish(topic, payload, retain, 1)
}

type hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *hook) ID() string { return "autopatcher-acl" }

func (h *hook) Provides(x byte) bool {
	return x == mqtt.OnConnectAuthenticate || x == mqtt.OnACLCheck
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		if id, err := transport.ClientIdentity(tc.ConnectionState()); err == nil {
			return id == cl.ID
		}
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	want, ok := h.b.creds[cl.ID]
	return ok && string(pk.Connect.Username) == cl.ID && bytes.Equal(pk.Connect.Password, want)
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if transport.Allowed(cl.ID, topic, write) {
		return true
	}
	h.b.mu.Lock()
	h.b.denied++
	h.b.mu.Unlock()
	return false
}
