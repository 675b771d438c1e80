package hub

import (
	"context"
	"log/slog"
	"time"

	"github.com/autopatcher/autopatcher/transport"
)

// ConnBus is the Bus over an MQTT connection to an external broker (for example
// mosquitto), where the broker authenticates devices and enforces the ACL.
// Messages are handled on one worker goroutine, in arrival order, because a
// transport.Conn handler must not block the connection.
type ConnBus struct {
	conn    *transport.Conn
	log     *slog.Logger
	timeout time.Duration
	work    chan func()
	done    chan struct{}
}

// NewConnBus wraps conn.
func NewConnBus(conn *transport.Conn, log *slog.Logger) *ConnBus {
	if log == nil {
		log = slog.Default()
	}
	b := &ConnBus{conn: conn, log: log, timeout: 30 * time.Second, work: make(chan func(), 1024), done: make(chan struct{})}
	go b.run()
	return b
}

func (b *ConnBus) run() {
	for {
		select {
		case fn := <-b.work:
			fn()
		case <-b.done:
			return
		}
	}
}

// Send publishes m to device.
func (b *ConnBus) Send(device string, m transport.Message) error {
	topic, err := transport.Topic(device, transport.ChannelOf(m))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	return b.conn.Publish(ctx, topic, m)
}

// Withdraw clears device's retained offer.
func (b *ConnBus) Withdraw(device string) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	return b.conn.ClearOffer(ctx, device)
}

// Receive subscribes to ch from every device.
func (b *ConnBus) Receive(ch transport.Channel, fn func(device string, m transport.Message)) error {
	return b.conn.Subscribe(transport.Filter(ch), func(topic string, m transport.Message) {
		device, _, err := transport.ParseTopic(topic)
		if err != nil {
			return
		}
		select {
		case b.work <- func() { fn(device, m) }:
		case <-b.done:
		}
	})
}

// Close stops the worker and closes the connection.
func (b *ConnBus) Close() error {
	close(b.done)
	return b.conn.Close()
}
