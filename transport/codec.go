package transport

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tinylib/msgp/msgp"
)

// Sentinel errors.
var (
	ErrDeviceID  = errors.New("transport: invalid device id")
	ErrTopic     = errors.New("transport: invalid topic")
	ErrMalformed = errors.New("transport: malformed message")
	ErrVersion   = errors.New("transport: unsupported protocol version")
	ErrClosed    = errors.New("transport: connection closed")
	ErrGaveUp    = errors.New("transport: no answer from the hub")
	ErrRefused   = errors.New("transport: hub refused the request")
	ErrCorrupt   = errors.New("transport: chunk failed verification")
)

// MaxMessage caps the size of an encoded message accepted by Decode (a chunk
// plus a little framing; chunks are capped by the bundle format well below).
const MaxMessage = 16 << 20

// Message is one of *Hello, *Status, *Get, *Offer, *Cmd, *Data.
type Message interface {
	msgp.Marshaler
	msgp.Unmarshaler
	msgp.Sizer
	version() uint32
	setVersion(uint32)
	channel() Channel
}

func (m *Hello) version() uint32  { return m.V }
func (m *Status) version() uint32 { return m.V }
func (m *Get) version() uint32    { return m.V }
func (m *Offer) version() uint32  { return m.V }
func (m *Cmd) version() uint32    { return m.V }
func (m *Data) version() uint32   { return m.V }

func (m *Hello) setVersion(v uint32)  { m.V = v }
func (m *Status) setVersion(v uint32) { m.V = v }
func (m *Get) setVersion(v uint32)    { m.V = v }
func (m *Offer) setVersion(v uint32)  { m.V = v }
func (m *Cmd) setVersion(v uint32)    { m.V = v }
func (m *Data) setVersion(v uint32)   { m.V = v }

func (*Hello) channel() Channel  { return ChHello }
func (*Status) channel() Channel { return ChStatus }
func (*Get) channel() Channel    { return ChGet }
func (*Offer) channel() Channel  { return ChOffer }
func (*Cmd) channel() Channel    { return ChCmd }
func (*Data) channel() Channel   { return ChData }

// ChannelOf returns the channel a message travels on.
func ChannelOf(m Message) Channel { return m.channel() }

// New returns an empty message of the type carried on ch, or nil.
func New(ch Channel) Message {
	switch ch {
	case ChHello:
		return new(Hello)
	case ChStatus:
		return new(Status)
	case ChGet:
		return new(Get)
	case ChOffer:
		return new(Offer)
	case ChCmd:
		return new(Cmd)
	case ChData:
		return new(Data)
	}
	return nil
}

// Encode encodes m; a version of 0 is written as Version. m is not
// modified, so one message may be encoded from several goroutines.
func Encode(m Message) ([]byte, error) {
	return appendMsg(nil, m)
}

// appendMsg appends the encoding of m to dst, as Encode does.
func appendMsg(dst []byte, m Message) ([]byte, error) {
	if m.version() == 0 {
		m = versioned(m)
	}
	if dst == nil {
		dst = make([]byte, 0, m.Msgsize())
	}
	b, err := m.MarshalMsg(dst)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.channel(), err)
	}
	return b, nil
}

// versioned returns a shallow copy of m with V = Version.
func versioned(m Message) Message {
	var c Message
	switch m := m.(type) {
	case *Hello:
		x := *m
		c = &x
	case *Status:
		x := *m
		c = &x
	case *Get:
		x := *m
		c = &x
	case *Offer:
		x := *m
		c = &x
	case *Cmd:
		x := *m
		c = &x
	case *Data:
		x := *m
		c = &x
	default:
		return m
	}
	c.setVersion(Version)
	return c
}

// Decode decodes b as the message type of ch. A Data's Bytes alias b (no
// copy of the chunk is made), so b must not be reused while it is in use.
// It refuses unknown channels,
// oversized or malformed input (ErrMalformed) and versions it does not speak
// (ErrVersion). Unknown fields are skipped, so newer peers may add fields.
func Decode(ch Channel, b []byte) (Message, error) {
	m := New(ch)
	if m == nil {
		return nil, fmt.Errorf("%w: unknown channel %q", ErrMalformed, ch)
	}
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("%w: %s of %d bytes, at most %d", ErrMalformed, ch, len(b), MaxMessage)
	}
	rest, err := m.UnmarshalMsg(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, ch, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %s: %d trailing bytes", ErrMalformed, ch, len(rest))
	}
	if d, ok := m.(*Data); ok && len(d.Bytes) == 0 {
		d.Bytes = nil // zero-copy decoding leaves an empty slice
	}
	if v := m.version(); v == 0 || v > Version {
		return nil, fmt.Errorf("%w: %s version %d, this side speaks %d", ErrVersion, ch, v, Version)
	}
	return m, nil
}

// Metrics counts messages through a Conn. All fields are safe for concurrent use.
type Metrics struct {
	Published atomic.Uint64 // messages handed to the broker
	Received  atomic.Uint64 // messages decoded and passed to a handler
	Dropped   atomic.Uint64 // messages dropped for any reason (sum of the next three)
	Malformed atomic.Uint64 // undecodable or wrong-version payloads
	Unknown   atomic.Uint64 // topics that are not ours or have no handler
	Denied    atomic.Uint64 // messages on a device topic that does not belong to the sender's role
}
