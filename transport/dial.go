package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// link is one network connection and the MQTT client speaking over it.
type link struct {
	cli    *paho.Client
	nc     net.Conn
	ctx    context.Context // done when the connection is gone
	cancel context.CancelFunc
}

func (l *link) gone() bool { return l.ctx.Err() != nil }

// disconnect sends DISCONNECT (reason 0, so the broker keeps the session)
// and closes the connection; a full socket does not hold it up for long.
func (l *link) disconnect() error {
	_ = l.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	err := l.cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
	if errors.Is(err, net.ErrClosed) || l.gone() {
		err = nil
	}
	return err
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

// jitter spreads d over [d/2, d], so devices that lost the same broker do
// not all come back at the same instant.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// run is the connect loop: it dials the servers in turn until one accepts,
// serves the connection until it is lost, and starts again, until Close.
func (c *Conn) run() {
	defer close(c.stopped)
	clean := c.cfg.CleanStart
	fails := 0
	for next := 0; ; next++ {
		u := c.urls[next%len(c.urls)]
		l, ack, err := c.connect(u, clean)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			c.log.Debug("mqtt connect failed", "server", u.Redacted(), "err", err)
			if sleep(c.ctx, jitter(Backoff(fails, c.cfg.MinBackoff, c.cfg.MaxBackoff))) != nil {
				return
			}
			fails++
			continue
		}
		clean = false
		fails = 0
		next-- // stay with the server that answered
		c.online(l, ack, u)
		select {
		case <-l.cli.Done():
		case <-c.ctx.Done():
		}
		l.cancel()
		c.mu.Lock()
		if c.cur == l {
			c.cur = nil
			c.upCh = make(chan struct{})
		}
		c.mu.Unlock()
		// Close may have sent DISCONNECT; either way the client must stop.
		l.nc.Close()
		<-l.cli.Done()
		if c.ctx.Err() != nil {
			return
		}
		c.log.Info("mqtt connection down", "server", u.Redacted())
		if sleep(c.ctx, jitter(c.cfg.MinBackoff)) != nil {
			return
		}
	}
}

// connect dials u and runs the MQTT handshake.
func (c *Conn) connect(u *url.URL, clean bool) (*link, *paho.Connack, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ConnectTimeout)
	defer cancel()
	d := &net.Dialer{}
	var nc net.Conn
	var err error
	if u.Scheme == "mqtts" {
		nc, err = (&tls.Dialer{NetDialer: d, Config: c.tls}).DialContext(ctx, "tcp", u.Host)
	} else {
		nc, err = d.DialContext(ctx, "tcp", u.Host)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	l := &link{nc: nc}
	l.ctx, l.cancel = context.WithCancel(c.ctx)
	l.cli = paho.NewClient(paho.ClientConfig{
		ClientID:          c.cfg.ClientID,
		Conn:              newWire(nc),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.receive},
		PacketTimeout:     c.cfg.ConnectTimeout,
		OnClientError: func(err error) {
			l.cancel()
			c.log.Debug("mqtt client error", "err", err)
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			l.cancel()
			c.log.Info("mqtt broker disconnected", "reason", d.ReasonCode)
		},
	})
	expiry := uint32(min(c.cfg.SessionExpiry/time.Second, 0xFFFFFFFF))
	keep := uint16(min(max(c.cfg.KeepAlive/time.Second, 1), 0xFFFF))
	cp := &paho.Connect{
		ClientID:   c.cfg.ClientID,
		KeepAlive:  keep,
		CleanStart: clean,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry},
	}
	if c.cfg.Username != "" {
		cp.UsernameFlag, cp.Username = true, c.cfg.Username
	}
	if c.cfg.Password != nil {
		cp.PasswordFlag, cp.Password = true, c.cfg.Password
	}
	ack, err := l.cli.Connect(ctx, cp)
	if err != nil {
		l.cancel()
		nc.Close()
		if ack != nil {
			return nil, nil, fmt.Errorf("connect %s: %w (reason %#x)", u.Redacted(), err, ack.ReasonCode)
		}
		return nil, nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	return l, ack, nil
}

// online restores the subscriptions the broker did not keep, then makes l
// the connection publishes use and wakes whoever waits for it.
func (c *Conn) online(l *link, ack *paho.Connack, u *url.URL) {
	c.log.Info("mqtt connected", "server", u.Redacted(), "session_present", ack.SessionPresent)
	c.mu.Lock()
	if !ack.SessionPresent {
		for _, s := range c.subs {
			s.live = false
		}
	}
	for {
		var todo []*sub
		for _, s := range c.subs {
			if !s.live {
				todo = append(todo, s)
			}
		}
		if len(todo) == 0 || l.gone() {
			break
		}
		c.mu.Unlock()
		for _, s := range todo {
			err := c.subscribe(l, s)
			if errors.Is(err, ErrRefused) {
				c.log.Warn("mqtt resubscribe refused", "filter", s.filter, "err", err)
				c.forget(s)
			} else if err != nil {
				// Start over on a new connection rather than run without
				// the subscription.
				c.log.Warn("mqtt resubscribe failed", "filter", s.filter, "err", err)
				l.cancel()
				l.nc.Close()
				break
			}
		}
		c.mu.Lock()
	}
	if !l.gone() {
		c.cur = l
		close(c.upCh)
		close(c.reup)
		c.reup = make(chan struct{})
	}
	c.mu.Unlock()
}

// wire is the net.Conn the MQTT client uses: reads go through a buffer, so
// a packet header costs no system call of its own; a writer holds the lock
// (the client takes it around every packet) and the packet's parts are
// gathered and written at once when it lets go.
type wire struct {
	net.Conn
	r  *bufio.Reader
	mu sync.Mutex
	w  *bufio.Writer
}

func newWire(nc net.Conn) *wire {
	return &wire{Conn: nc, r: bufio.NewReaderSize(nc, 64<<10), w: bufio.NewWriterSize(nc, 16<<10)}
}

func (w *wire) Read(p []byte) (int, error) { return w.r.Read(p) }

// Write must be called between Lock and Unlock, as the client does.
func (w *wire) Write(p []byte) (int, error) { return w.w.Write(p) }

func (w *wire) Lock() { w.mu.Lock() }

func (w *wire) Unlock() {
	if err := w.w.Flush(); err != nil {
		// The packet did not go out whole: the stream is broken. Closing
		// makes the client notice and the Conn reconnect.
		w.Conn.Close()
	}
	w.mu.Unlock()
}
