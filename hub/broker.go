package hub

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/autopatcher/autopatcher/transport"
)

// Bus is how the hub exchanges messages with devices: the embedded broker's inline
// client (Broker), or an MQTT connection to an external broker (ConnBus).
type Bus interface {
	// Send publishes m to device on m's channel; offers are retained.
	Send(device string, m transport.Message) error
	// Withdraw clears the device's retained offer.
	Withdraw(device string) error
	// Receive delivers every message on ch from any device to fn, decoded and
	// with the device id taken from the topic. Malformed messages are dropped.
	Receive(ch transport.Channel, fn func(device string, m transport.Message)) error
}

// Identity is what a connecting client proved about itself.
type Identity struct {
	ClientID string
	Username string
	Password []byte
	Certs    []*x509.Certificate // verified chain is not implied; the leaf comes first
	Remote   string
}

// Gate decides who may connect and learns who is online. The registry implements it.
type Gate interface {
	Admit(id Identity) error
	Connected(clientID string)
	Disconnected(clientID string)
}

// BrokerConfig configures the embedded broker. Empty addresses disable a listener.
type BrokerConfig struct {
	TCPAddr string      // plain MQTT, e.g. "127.0.0.1:1883"
	TLSAddr string      // MQTT over TLS, e.g. "127.0.0.1:8883"
	TLS     *tls.Config // server certificate and client-certificate policy for TLSAddr
	Gate    Gate
	Log     *slog.Logger
}

// Broker is the embedded MQTT broker (mochi-mqtt) with AutoPatcher's authentication
// and per-device ACL (transport.Allowed). It implements Bus through the inline client,
// which is the hub's own identity and bypasses the ACL.
type Broker struct {
	srv    *mqtt.Server
	tcp    *listeners.TCP
	tls    *listeners.TCP
	log    *slog.Logger
	subID  atomic.Int64
	closed atomic.Bool
	// Metrics counts the hub's messages through the inline client.
	Metrics transport.Metrics
}

// NewBroker creates and starts the broker.
func NewBroker(cfg BrokerConfig) (*Broker, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = 7 * 24 * 3600
	caps.MaximumClientWritesPending = 2 * transport.MaxWindow // room for a full window of chunks; 8 bytes per slot per client
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		Logger:       cfg.Log.With("component", "broker"),
	})
	h := &brokerHook{gate: cfg.Gate, log: cfg.Log, current: map[string]*mqtt.Client{}}
	if err := srv.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	b := &Broker{srv: srv, log: cfg.Log}
	if cfg.TCPAddr != "" {
		b.tcp = listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.TCPAddr})
		if err := srv.AddListener(b.tcp); err != nil {
			return nil, fmt.Errorf("start broker on %s: %w", cfg.TCPAddr, err)
		}
	}
	if cfg.TLSAddr != "" {
		if cfg.TLS == nil {
			return nil, fmt.Errorf("start broker on %s: TLS listener without TLS configuration", cfg.TLSAddr)
		}
		b.tls = listeners.NewTCP(listeners.Config{ID: "tls", Address: cfg.TLSAddr, TLSConfig: cfg.TLS})
		if err := srv.AddListener(b.tls); err != nil {
			srv.Close()
			return nil, fmt.Errorf("start broker on %s: %w", cfg.TLSAddr, err)
		}
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, fmt.Errorf("start broker: %w", err)
	}
	return b, nil
}

// TCPAddr returns the bound address of the plain listener ("" when disabled).
func (b *Broker) TCPAddr() string {
	if b.tcp == nil {
		return ""
	}
	return b.tcp.Address()
}

// TLSAddr returns the bound address of the TLS listener ("" when disabled).
func (b *Broker) TLSAddr() string {
	if b.tls == nil {
		return ""
	}
	return b.tls.Address()
}

// Connections returns the number of network connections the broker is serving. A
// connection counts until the broker has finished with it, including the hub's
// presence update for its disconnect.
func (b *Broker) Connections() int {
	return int(atomic.LoadInt64(&b.srv.Info.ClientsConnected))
}

// Send publishes m to device as the hub (QoS 1); offers are retained.
func (b *Broker) Send(device string, m transport.Message) error {
	ch := transport.ChannelOf(m)
	topic, err := transport.Topic(device, ch)
	if err != nil {
		return err
	}
	p, err := transport.Encode(m)
	if err != nil {
		return err
	}
	return b.publish(topic, p, ch == transport.ChOffer)
}

// Withdraw clears the retained offer of device.
func (b *Broker) Withdraw(device string) error {
	topic, err := transport.Topic(device, transport.ChOffer)
	if err != nil {
		return err
	}
	return b.publish(topic, nil, true)
}

func (b *Broker) publish(topic string, p []byte, retain bool) error {
	if b.closed.Load() {
		return transport.ErrClosed
	}
	if err := b.srv.Publish(topic, p, retain, 1); err != nil {
		return err
	}
	b.Metrics.Published.Add(1)
	return nil
}

// Receive delivers messages on ch from every device to fn, synchronously in the
// sender's connection goroutine (so one device's messages are handled in order).
func (b *Broker) Receive(ch transport.Channel, fn func(device string, m transport.Message)) error {
	id := int(b.subID.Add(1))
	return b.srv.Subscribe(transport.Filter(ch), id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		device, got, err := transport.ParseTopic(pk.TopicName)
		if err != nil || got != ch {
			b.Metrics.Dropped.Add(1)
			b.Metrics.Unknown.Add(1)
			b.log.Warn("dropped message on unexpected topic", "topic", pk.TopicName)
			return
		}
		m, err := transport.Decode(ch, pk.Payload)
		if err != nil {
			b.Metrics.Dropped.Add(1)
			b.Metrics.Malformed.Add(1)
			b.log.Warn("dropped malformed message", "device", device, "channel", ch, "err", err)
			return
		}
		b.Metrics.Received.Add(1)
		fn(device, m)
	})
}

// Kick disconnects the client with id, if connected (a device just rejected).
func (b *Broker) Kick(clientID string) {
	if cl, ok := b.srv.Clients.Get(clientID); ok && !cl.Net.Inline {
		b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
}

// Close stops the listeners and disconnects every client.
func (b *Broker) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	return b.srv.Close()
}

// brokerHook authenticates clients through the Gate and applies transport.Allowed.
type brokerHook struct {
	mqtt.HookBase
	gate Gate
	log  *slog.Logger

	mu      sync.Mutex
	current map[string]*mqtt.Client // live connection per client id
}

func (h *brokerHook) ID() string { return "autopatch-auth" }

func (h *brokerHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablish, mqtt.OnDisconnect:
		return true
	}
	return false
}

func (h *brokerHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	id := Identity{
		ClientID: cl.ID,
		Username: string(pk.Connect.Username),
		Password: pk.Connect.Password,
		Remote:   cl.Net.Remote,
	}
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		id.Certs = tc.ConnectionState().PeerCertificates
	}
	if h.gate == nil {
		return false
	}
	if err := h.gate.Admit(id); err != nil {
		h.log.Info("mqtt connection refused", "client", cl.ID, "remote", cl.Net.Remote, "err", err)
		return false
	}
	return true
}

func (h *brokerHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	ok := transport.Allowed(cl.ID, topic, write)
	if !ok {
		h.log.Debug("mqtt acl denied", "client", cl.ID, "topic", topic, "write", write)
	}
	return ok
}

// Presence follows the broker's session handover. OnSessionEstablish runs for an
// authenticated connection before the broker takes an older connection of the same
// client id over and before it sends CONNACK; the older connection's OnDisconnect runs
// later, in that connection's own goroutine. So the newest connection claims the id
// here, and a disconnect counts only from the connection that still holds the claim.
// The Gate is told under the same lock as the claim changes, so its updates land in
// the order of the claims: a device whose newer connection is up is never left
// offline by its older connection's late disconnect.
//
// Known limit: if sending CONNACK fails, the broker calls no further hook for that
// connection, so the device stays online until its next connection ends.

func (h *brokerHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.current[cl.ID] = cl
	if h.gate != nil {
		h.gate.Connected(cl.ID)
	}
}

func (h *brokerHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if cl.Net.Inline {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.current[cl.ID] != cl {
		return // taken over by a newer connection of the same device: not offline
	}
	delete(h.current, cl.ID)
	if h.gate != nil {
		h.gate.Disconnected(cl.ID)
	}
}
