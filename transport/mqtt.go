package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Config configures a Conn. Zero values take the documented defaults.
type Config struct {
	// Servers are broker URLs tried in turn: mqtts://host:port (TLS, default
	// port 8883) or mqtt://host:port (plain TCP, default port 1883, refused
	// unless AllowPlain).
	Servers []string
	// ClientID is the MQTT client id: the device id, or Hub for the hub.
	ClientID string
	// Username and Password, when the broker uses per-device credentials
	// instead of client certificates. Default: none.
	Username string
	Password []byte
	// TLS is used for mqtts:// servers, typically from TLSConfig. Default:
	// system roots, no client certificate.
	TLS *TLSSettings
	// AllowPlain permits mqtt:// (unencrypted) servers. Default false.
	AllowPlain bool
	// KeepAlive between control packets. Default 30s.
	KeepAlive time.Duration
	// SessionExpiry is how long the broker keeps the session (subscriptions
	// and undelivered QoS 1 messages) of a disconnected client. Default 24h.
	SessionExpiry time.Duration
	// CleanStart discards a previous session on the first connection.
	// Default false, so an offline device finds what was sent to it.
	CleanStart bool
	// ConnectTimeout bounds one connection attempt, every subscribe and the
	// wait for one publish's acknowledgement. Default 10s.
	ConnectTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential reconnect backoff.
	// Defaults 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives one line per dropped message and per connection
	// change. Default slog.Default().
	Logger *slog.Logger
	// Metrics, when set, is updated by the Conn; else the Conn keeps its own.
	Metrics *Metrics
}

// Handler receives a decoded message and the topic it arrived on. Handlers
// run on the connection's receive goroutine: they must return quickly (hand
// work to another goroutine), or the connection stalls.
type Handler func(topic string, m Message)

// maxQueue bounds the publishes of a Conn that wait for the connection or
// for their acknowledgement; further Publish calls block until one is done.
const maxQueue = 4096

// Conn is an MQTT v5 connection that reconnects by itself and speaks the
// AutoPatcher messages.
//
// It dials the configured servers in turn (TCP or TLS) with exponential
// backoff and jitter, connects with a persistent session (clean start only
// on the first connection when Config.CleanStart says so), subscribes again
// when the broker did not keep the session, and sends every publish that
// was waiting or unacknowledged when the link went down again on the next
// connection. Those publishes live in memory only: a process that exits
// loses the ones not acknowledged yet (their Publish calls never returned
// nil), while whatever the broker holds in the session survives.
type Conn struct {
	cfg     Config
	urls    []*url.URL
	tls     *tls.Config
	log     *slog.Logger
	metrics *Metrics
	hub     bool

	ctx     context.Context // ends with Close
	cancel  context.CancelFunc
	stopped chan struct{} // closed when the connect loop has returned
	queue   chan struct{} // one token per publish waiting or in flight

	mu    sync.Mutex
	cur   *link         // the connection in use, nil while down
	upCh  chan struct{} // closed once cur is set; replaced when it goes down
	reup  chan struct{} // closed at the next connection; then replaced
	subs  []*sub
	early []received // arrived before a matching Subscribe
}

type sub struct {
	filter string
	h      Handler
	live   bool // acknowledged in the broker's current session
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Config) defaults() {
	if c.KeepAlive == 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = 24 * time.Hour
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 250 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = new(Metrics)
	}
}

func (c *Config) servers() ([]*url.URL, error) {
	if len(c.Servers) == 0 {
		return nil, errors.New("dial: no servers configured")
	}
	var urls []*url.URL
	for _, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("dial: server %q: %w", s, err)
		}
		switch u.Scheme {
		case "mqtts", "tls", "ssl":
			u.Scheme = "mqtts"
			if u.Port() == "" {
				u.Host += ":8883"
			}
		case "mqtt", "tcp":
			if !c.AllowPlain {
				return nil, fmt.Errorf("dial: server %q is plain TCP and AllowPlain is off", s)
			}
			u.Scheme = "mqtt"
			if u.Port() == "" {
				u.Host += ":1883"
			}
		default:
			return nil, fmt.Errorf("dial: server %q: scheme %q, want mqtts or mqtt", s, u.Scheme)
		}
		if u.Hostname() == "" {
			return nil, fmt.Errorf("dial: server %q has no host", s)
		}
		urls = append(urls, u)
	}
	return urls, nil
}

// Dial connects to the first reachable server and returns once connected
// (or ctx is done, which closes the connection and returns ctx's error).
// After that the Conn reconnects by itself with backoff until Close.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	cfg.defaults()
	urls, err := cfg.servers()
	if err != nil {
		return nil, err
	}
	if cfg.ClientID == "" {
		return nil, errors.New("dial: empty client id")
	}
	if !IsHub(cfg.ClientID) {
		if err := ValidDevice(cfg.ClientID); err != nil {
			return nil, fmt.Errorf("dial: %w", err)
		}
	}
	c := &Conn{cfg: cfg, urls: urls, log: cfg.Logger.With("client", cfg.ClientID), metrics: cfg.Metrics,
		hub: IsHub(cfg.ClientID), stopped: make(chan struct{}), queue: make(chan struct{}, maxQueue),
		upCh: make(chan struct{}), reup: make(chan struct{})}
	c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLS != nil {
		if c.tls, err = cfg.TLS.Config(); err != nil {
			return nil, fmt.Errorf("dial: %w", err)
		}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
	if _, err := c.await(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial %s: %w", strings.Join(cfg.Servers, ","), err)
	}
	return c, nil
}

// Metrics returns the Conn's counters.
func (c *Conn) Metrics() *Metrics { return c.metrics }

// await returns the connection in use, waiting for one while it is down.
func (c *Conn) await(ctx context.Context) (*link, error) {
	for {
		c.mu.Lock()
		l, up := c.cur, c.upCh
		c.mu.Unlock()
		if l != nil {
			return l, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// Reconnected returns a channel closed when the next connection is up (its
// subscriptions restored); call it again for the connection after that. The
// Fetcher uses it to ask again at once for what a lost link may have
// swallowed; a device agent, to send its inventory again.
func (c *Conn) Reconnected() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reup
}

// Subscribe registers h for messages on filter (an MQTT filter, + and #
// allowed) and subscribes with QoS 1. The broker keeps the subscription in
// the persistent session; when it reports on a reconnect that it did not
// keep the session (a restarted broker, an expired session), the Conn
// subscribes again. When the connection is down the subscription is made
// on the next connect. Messages the broker delivered from a persistent
// session before h was registered (they arrive right after connecting) are
// handed to h first.
func (c *Conn) Subscribe(filter string, h Handler) error {
	s := &sub{filter: filter, h: h}
	c.mu.Lock()
	c.subs = append(c.subs, s)
	var early []received
	kept := c.early[:0]
	for _, r := range c.early {
		if Match(filter, r.topic) {
			early = append(early, r)
		} else {
			kept = append(kept, r)
		}
	}
	c.early = kept
	l := c.cur
	c.mu.Unlock()
	for _, r := range early {
		c.metrics.Received.Add(1)
		h(r.topic, r.m)
	}
	if l == nil {
		return nil // subscribed by the connect loop before the link is used
	}
	err := c.subscribe(l, s)
	if errors.Is(err, ErrRefused) {
		// Not retried on reconnect: the broker's ACL will not change its mind.
		c.forget(s)
		return err
	}
	if err != nil && l.gone() {
		return nil // made again on the next connect
	}
	return err
}

// subscribe sends one SUBSCRIBE on l and marks s live when it is granted.
func (c *Conn) subscribe(l *link, s *sub) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ConnectTimeout)
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()
	// RetainHandling 0: the retained offer comes with every subscribe, so a
	// device that starts (or lost its session) learns its offer.
	req := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: s.filter, QoS: 1}}}
	ack, err := l.cli.Subscribe(ctx, req)
	// Some brokers (mochi) share one packet identifier space between both
	// directions and refuse an identifier still used by a message they are
	// redelivering to us; it frees up once we acknowledge that message.
	for ack != nil && len(ack.Reasons) == 1 && ack.Reasons[0] == reasonIDInUse {
		if err = sleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("subscribe %s: %w", s.filter, err)
		}
		ack, err = l.cli.Subscribe(ctx, req)
	}
	if ack != nil && (len(ack.Reasons) != 1 || ack.Reasons[0] >= 0x80) {
		return fmt.Errorf("subscribe %s: %w (reason %#x)", s.filter, ErrRefused, ack.Reasons)
	}
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", s.filter, err)
	}
	c.mu.Lock()
	if !l.gone() {
		s.live = true
	}
	c.mu.Unlock()
	return nil
}

func (c *Conn) forget(s *sub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.subs {
		if x == s {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			return
		}
	}
}

// Publish encodes m and publishes it on topic, waiting for the connection
// when it is down. The topic's channel must match the message type; offers
// are published retained. Data (chunks, manifests) goes with QoS 0: the
// Fetcher asks again for whatever does not arrive, so a chunk is never
// stored for an offline device nor acknowledged one by one. Everything
// else goes with QoS 1, and Publish returns once the broker acknowledged it.
func (c *Conn) Publish(ctx context.Context, topic string, m Message) error {
	_, ch, err := ParseTopic(topic)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if ch != ChannelOf(m) {
		return fmt.Errorf("publish: %w: %s message on %q", ErrTopic, ChannelOf(m), topic)
	}
	bp := encodeBuf.Get().(*[]byte)
	b, err := appendMsg((*bp)[:0], m)
	if err != nil {
		encodeBuf.Put(bp)
		return fmt.Errorf("publish: %w", err)
	}
	qos := byte(1)
	if ch == ChData {
		qos = 0
	}
	// The client does not keep b once publish returns (a QoS 1 message it
	// may resend is copied into its session store), so b is reused.
	err = c.publish(ctx, topic, b, ch == ChOffer, qos)
	if cap(b) <= maxPooled {
		*bp = b[:0]
		encodeBuf.Put(bp)
	}
	return err
}

// encodeBuf recycles encoding buffers: a chunk's Data is as large as the
// chunk, and a transfer publishes thousands of them.
var encodeBuf = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooled is the largest buffer put back into encodeBuf.
const maxPooled = 1 << 20

// ClearOffer removes the retained offer of device.
func (c *Conn) ClearOffer(ctx context.Context, device string) error {
	topic, err := Topic(device, ChOffer)
	if err != nil {
		return fmt.Errorf("clear offer: %w", err)
	}
	return c.publish(ctx, topic, nil, true, 1)
}

// PublishRaw publishes arbitrary bytes; it exists for tests of how peers
// treat malformed input.
func (c *Conn) PublishRaw(ctx context.Context, topic string, payload []byte) error {
	return c.publish(ctx, topic, payload, false, 1)
}

// publish sends b on topic and, for QoS 1, waits for the broker's
// acknowledgement. A publish whose connection went down before it was
// acknowledged is sent again on the next connection, so the broker may see
// it twice; every message of the protocol tolerates that.
func (c *Conn) publish(ctx context.Context, topic string, b []byte, retain bool, qos byte) error {
	select {
	case c.queue <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("publish %s: %w", topic, ctx.Err())
	case <-c.ctx.Done():
		return fmt.Errorf("publish %s: %w", topic, ErrClosed)
	}
	defer func() { <-c.queue }()
	p := &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: b}
	for {
		l, err := c.await(ctx)
		if err != nil {
			return fmt.Errorf("publish %s: %w", topic, err)
		}
		pctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(l.ctx, cancel) // give up on this link when it goes down
		resp, err := l.cli.Publish(pctx, p)
		stop()
		cancel()
		if resp != nil && resp.ReasonCode >= 0x80 {
			return fmt.Errorf("publish %s: %w (reason %#x)", topic, ErrRefused, resp.ReasonCode)
		}
		if err == nil {
			c.metrics.Published.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish %s: %w", topic, ctx.Err())
		}
		if c.ctx.Err() != nil {
			return fmt.Errorf("publish %s: %w", topic, ErrClosed)
		}
		// The link went down (or the acknowledgement did not come in time):
		// send it again, on the next connection when this one is gone.
		c.log.Debug("mqtt publish retry", "topic", topic, "err", err)
		if !l.gone() {
			if err := sleep(ctx, c.cfg.MinBackoff); err != nil {
				return fmt.Errorf("publish %s: %w", topic, err)
			}
		}
	}
}

func (c *Conn) receive(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	c.mu.Lock()
	var h Handler
	for _, s := range c.subs {
		if Match(s.filter, p.Topic) {
			h = s.h
			break
		}
	}
	c.mu.Unlock()
	_, ch, err := ParseTopic(p.Topic)
	if err != nil {
		c.drop(&c.metrics.Unknown, p.Topic, err)
		return true, nil
	}
	if ch.Up() != c.hub {
		c.drop(&c.metrics.Denied, p.Topic, errors.New("message for the other side"))
		return true, nil
	}
	var m Message
	if ch == ChOffer && len(p.Payload) == 0 {
		m = &Offer{V: Version} // retained offer cleared
	} else if m, err = Decode(ch, p.Payload); err != nil {
		c.drop(&c.metrics.Malformed, p.Topic, err)
		return true, nil
	}
	if h == nil {
		// Delivered from the session before Subscribe: keep it for the
		// handler to come.
		c.mu.Lock()
		if len(c.early) >= maxEarly {
			c.early = c.early[1:]
			c.mu.Unlock()
			c.drop(&c.metrics.Unknown, p.Topic, errors.New("no handler"))
			c.mu.Lock()
		}
		c.early = append(c.early, received{p.Topic, m})
		c.mu.Unlock()
		return true, nil
	}
	c.metrics.Received.Add(1)
	h(p.Topic, m)
	return true, nil
}

// reasonIDInUse is MQTT v5's "packet identifier in use" reason code.
const reasonIDInUse = 0x91

// maxEarly bounds the messages kept for handlers not registered yet.
const maxEarly = 256

type received struct {
	topic string
	m     Message
}

func (c *Conn) drop(counter interface{ Add(uint64) uint64 }, topic string, err error) {
	counter.Add(1)
	c.metrics.Dropped.Add(1)
	c.log.Warn("mqtt message dropped", "topic", topic, "err", err)
}

// Close disconnects and stops reconnecting. Publishes still waiting fail
// with ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	l := c.cur
	c.mu.Unlock()
	var err error
	if l != nil {
		// Reason 0: the broker keeps the session for SessionExpiry.
		err = l.disconnect()
	}
	c.cancel()
	<-c.stopped
	return err
}

// Drop closes the network connection without a DISCONNECT, as a lost link
// would; the Conn then reconnects by itself. For fault tests.
func (c *Conn) Drop() {
	c.mu.Lock()
	l := c.cur
	c.mu.Unlock()
	if l != nil {
		l.nc.Close()
	}
}

// Match reports whether topic matches the MQTT filter (with + and #; a
// $share/{group}/ prefix is ignored).
func Match(filter, topic string) bool {
	filter, ok := unshared(filter)
	if !ok {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			return fmore == tmore || (!tmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}
