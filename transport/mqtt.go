package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
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
	// ConnectTimeout bounds one connection attempt and every subscribe.
	// Default 10s.
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

// Conn is an MQTT v5 connection that reconnects by itself and speaks the
// AutoPatcher messages.
type Conn struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	cm      *autopaho.ConnectionManager
	cancel  context.CancelFunc
	hub     bool

	mu    sync.Mutex
	subs  []sub
	early []received    // arrived before a matching Subscribe
	down  chan struct{} // closed when the current connection goes down
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

type sub struct {
	filter string
	h      Handler
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

// Backoff returns the delay before reconnect attempt n (0-based): min·2ⁿ,
// capped at max.
func Backoff(n int, min, max time.Duration) time.Duration {
	d := min
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
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
	c := &Conn{cfg: cfg, log: cfg.Logger.With("client", cfg.ClientID), metrics: cfg.Metrics, hub: IsHub(cfg.ClientID),
		down: make(chan struct{})}
	close(c.down)
	ac := autopaho.ClientConfig{
		ServerUrls:                    urls,
		KeepAlive:                     uint16(cfg.KeepAlive / time.Second),
		CleanStartOnInitialConnection: cfg.CleanStart,
		SessionExpiryInterval:         uint32(cfg.SessionExpiry / time.Second),
		ConnectTimeout:                cfg.ConnectTimeout,
		ReconnectBackoff:              func(n int) time.Duration { return Backoff(n, cfg.MinBackoff, cfg.MaxBackoff) },
		ConnectUsername:               cfg.Username,
		ConnectPassword:               cfg.Password,
		OnConnectionUp:                c.up,
		OnConnectionDown: func() bool {
			c.log.Info("mqtt connection down")
			c.mu.Lock()
			select {
			case <-c.down:
			default:
				close(c.down)
			}
			c.mu.Unlock()
			return true
		},
		OnConnectError: func(err error) { c.log.Debug("mqtt connect failed", "err", err) },
		ClientConfig: paho.ClientConfig{
			ClientID:          cfg.ClientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.receive},
			OnClientError:     func(err error) { c.log.Debug("mqtt client error", "err", err) },
		},
	}
	if ac.KeepAlive == 0 {
		ac.KeepAlive = 1
	}
	if cfg.TLS != nil {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return nil, fmt.Errorf("dial: %w", err)
		}
		ac.TlsCfg = tc
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	cm, err := autopaho.NewConnection(runCtx, ac)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.cm = cm
	if err := cm.AwaitConnection(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial %s: %w", strings.Join(cfg.Servers, ","), err)
	}
	return c, nil
}

// Metrics returns the Conn's counters.
func (c *Conn) Metrics() *Metrics { return c.metrics }

// up (re)subscribes every registered filter. A session the broker kept
// already holds them, but a restarted broker does not.
func (c *Conn) up(cm *autopaho.ConnectionManager, ack *paho.Connack) {
	c.log.Info("mqtt connected", "session_present", ack.SessionPresent)
	c.mu.Lock()
	c.down = make(chan struct{})
	subs := append([]sub(nil), c.subs...)
	c.mu.Unlock()
	if len(subs) == 0 {
		return
	}
	go func() {
		for _, s := range subs {
			if err := c.subscribe(cm, s.filter); err != nil {
				c.log.Warn("mqtt resubscribe failed", "filter", s.filter, "err", err)
			}
		}
	}()
}

func (c *Conn) subscribe(cm *autopaho.ConnectionManager, filter string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ConnectTimeout)
	defer cancel()
	// RetainHandling 0: the retained offer comes with every subscribe, also
	// the one after a reconnect or a restart, so a device always learns its
	// offer; receivers act on the offer id, so repeats are harmless.
	ack, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if ack != nil && (len(ack.Reasons) != 1 || ack.Reasons[0] >= 0x80) {
		return fmt.Errorf("subscribe %s: %w (reason %#x)", filter, ErrRefused, ack.Reasons)
	}
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	return nil
}

// Subscribe registers h for messages on filter (an MQTT filter, + and #
// allowed) and subscribes with QoS 1, now and after every reconnect. When
// the connection is down the subscription is made on the next connect.
// Messages the broker delivered from a persistent session before h was
// registered (they arrive right after connecting) are handed to h first.
func (c *Conn) Subscribe(filter string, h Handler) error {
	c.mu.Lock()
	c.subs = append(c.subs, sub{filter, h})
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
	c.mu.Unlock()
	for _, r := range early {
		c.metrics.Received.Add(1)
		h(r.topic, r.m)
	}
	err := c.subscribe(c.cm, filter)
	if errors.Is(err, autopaho.ConnectionDownError) {
		return nil
	}
	if errors.Is(err, ErrRefused) {
		// Not retried on reconnect: the broker's ACL will not change its mind.
		c.mu.Lock()
		for i := len(c.subs) - 1; i >= 0; i-- {
			if c.subs[i].filter == filter {
				c.subs = append(c.subs[:i], c.subs[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
	}
	return err
}

// Publish encodes m and publishes it on topic with QoS 1, waiting for the
// connection when it is down. The topic's channel must match the message
// type; offers are published retained.
func (c *Conn) Publish(ctx context.Context, topic string, m Message) error {
	_, ch, err := ParseTopic(topic)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if ch != ChannelOf(m) {
		return fmt.Errorf("publish: %w: %s message on %q", ErrTopic, ChannelOf(m), topic)
	}
	b, err := Encode(m)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return c.publishRaw(ctx, topic, b, ch == ChOffer)
}

// ClearOffer removes the retained offer of device.
func (c *Conn) ClearOffer(ctx context.Context, device string) error {
	topic, err := Topic(device, ChOffer)
	if err != nil {
		return fmt.Errorf("clear offer: %w", err)
	}
	return c.publishRaw(ctx, topic, nil, true)
}

// PublishRaw publishes arbitrary bytes; it exists for tests of how peers
// treat malformed input.
func (c *Conn) PublishRaw(ctx context.Context, topic string, payload []byte) error {
	return c.publishRaw(ctx, topic, payload, false)
}

func (c *Conn) publishRaw(ctx context.Context, topic string, b []byte, retain bool) error {
	for {
		if err := c.cm.AwaitConnection(ctx); err != nil {
			return fmt.Errorf("publish %s: %w", topic, err)
		}
		// An in-flight publish whose connection dropped would wait for its
		// PUBACK until the packet timeout; give up on it when the connection
		// goes down and send it again on the next one.
		c.mu.Lock()
		down := c.down
		c.mu.Unlock()
		select {
		case <-down: // the up callback has not run yet
			if err := sleep(ctx, c.cfg.MinBackoff/4); err != nil {
				return fmt.Errorf("publish %s: %w", topic, err)
			}
			continue
		default:
		}
		actx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-down:
				cancel()
			case <-actx.Done():
			}
		}()
		resp, err := c.cm.Publish(actx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: b})
		cancel()
		if resp != nil && resp.ReasonCode >= 0x80 {
			return fmt.Errorf("publish %s: %w (reason %#x)", topic, ErrRefused, resp.ReasonCode)
		}
		if errors.Is(err, autopaho.ConnectionDownError) {
			continue
		}
		if errors.Is(err, paho.ErrNetworkErrorAfterStored) {
			// Stored in the session: sent again after the reconnect.
			c.metrics.Published.Add(1)
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("publish %s: %w", topic, ctx.Err())
			}
			select {
			case <-c.cm.Done():
				return fmt.Errorf("publish %s: %w", topic, ErrClosed)
			default:
			}
			// The connection dropped while the message was in flight; the
			// session resends it, but the caller wants an answer: retry.
			c.log.Debug("mqtt publish retry", "topic", topic, "err", err)
			if err := sleep(ctx, c.cfg.MinBackoff); err != nil {
				return fmt.Errorf("publish %s: %w", topic, err)
			}
			continue
		}
		c.metrics.Published.Add(1)
		return nil
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

// Close disconnects and stops reconnecting.
func (c *Conn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.cm.Disconnect(ctx)
	c.cancel()
	if errors.Is(err, autopaho.ConnectionDownError) {
		err = nil
	}
	return err
}

// Match reports whether topic matches the MQTT filter (with + and #; a
// $share/{group}/ prefix is ignored).
func Match(filter, topic string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, f, ok := strings.Cut(rest, "/")
		if !ok {
			return false
		}
		filter = f
	}
	fs := strings.Split(filter, "/")
	ts := strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) {
			return false
		}
		if f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}

// Drop closes the network connection without a DISCONNECT, as a lost link
// would; the Conn then reconnects by itself. For fault tests.
func (c *Conn) Drop() { c.cm.TerminateConnectionForTest() }
