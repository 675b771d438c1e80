package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotFound is what a ChunkStore wraps when a chunk or manifest does not
// exist; the device then receives KindNotFound.
var ErrNotFound = errors.New("transport: not found")

// ChunkStore gives the hub's stored bytes of an offered bundle: chunk idx of
// component comp exactly as stored in the bundle, and the signed manifest.
type ChunkStore interface {
	Chunk(offerID string, comp, idx int) ([]byte, error)
	Manifest(offerID string) ([]byte, error)
}

// Offered reports whether offerID was offered to device (and is still
// valid). A Server refuses every other request with KindNotOffered.
type Offered func(device, offerID string) bool

// ServeOptions tunes a Server. Zero values take the defaults.
type ServeOptions struct {
	// Workers answering requests in parallel. Default 8.
	Workers int
	// Queue is how many requests wait for a worker before new ones are
	// dropped (the device asks again). Default 1024.
	Queue int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// ServeStats counts what a Server did.
type ServeStats struct {
	Requests atomic.Uint64 // Gets handled
	Chunks   atomic.Uint64 // chunks handed to the broker
	Bytes    atomic.Uint64 // chunk and manifest bytes handed to the broker
	Refused  atomic.Uint64 // Gets answered with an error kind
	Dropped  atomic.Uint64 // Gets dropped because the queue was full
}

// Server answers devices' Gets on the hub: subscribe it with Start, which
// listens on ap/v1/d/+/get.
type Server struct {
	link    Link
	store   ChunkStore
	offered Offered
	opts    ServeOptions
	log     *slog.Logger
	queue   chan request
	Stats   ServeStats
	once    sync.Once
}

type request struct {
	device string
	get    *Get
}

// NewServer returns a Server reading from store and answering only offers
// for which offered says yes.
func NewServer(l Link, store ChunkStore, offered Offered, o ServeOptions) *Server {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Queue <= 0 {
		o.Queue = 1024
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Server{link: l, store: store, offered: offered, opts: o, log: o.Logger,
		queue: make(chan request, o.Queue)}
}

// Start subscribes to every device's get topic and answers until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	for i := 0; i < s.opts.Workers; i++ {
		go s.work(ctx)
	}
	if err := s.link.Subscribe(Filter(ChGet), s.Handle); err != nil {
		return fmt.Errorf("start chunk server: %w", err)
	}
	return nil
}

// Handle queues a Get received on topic; it never blocks. It is a Handler for
// callers that route messages themselves (then run Start with a Link whose
// Subscribe does nothing, or call Serve).
func (s *Server) Handle(topic string, m Message) {
	g, ok := m.(*Get)
	if !ok {
		return
	}
	device, ch, err := ParseTopic(topic)
	if err != nil || ch != ChGet {
		return
	}
	select {
	case s.queue <- request{device, g}:
	default:
		s.Stats.Dropped.Add(1)
	}
}

func (s *Server) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.queue:
			if err := s.Serve(ctx, r.device, r.get); err != nil && ctx.Err() == nil {
				s.log.Warn("answer chunk request", "device", r.device, "offer", r.get.Offer, "err", err)
			}
		}
	}
}

// Serve answers one Get from device: the manifest, or every wanted chunk up
// to min(Get.Window, MaxWindow), or one Data carrying an error kind.
func (s *Server) Serve(ctx context.Context, device string, g *Get) error {
	s.Stats.Requests.Add(1)
	topic, err := Topic(device, ChData)
	if err != nil {
		return err
	}
	fail := func(kind ErrorKind, detail string, idx uint32) error {
		s.Stats.Refused.Add(1)
		return s.link.Publish(ctx, topic, &Data{Offer: g.Offer, Manifest: g.Manifest, Comp: g.Comp, Index: idx,
			Err: kind, Detail: detail, Seq: g.Seq})
	}
	if s.offered == nil || !s.offered(device, g.Offer) {
		return fail(KindNotOffered, fmt.Sprintf("offer %q was not made to %s", g.Offer, device), g.Base)
	}
	if g.Manifest {
		b, err := s.store.Manifest(g.Offer)
		if err != nil {
			return fail(kindOf(err), err.Error(), 0)
		}
		s.Stats.Bytes.Add(uint64(len(b)))
		return s.link.Publish(ctx, topic, &Data{Offer: g.Offer, Manifest: true, Bytes: b, Seq: g.Seq})
	}
	if len(g.Bitmap) == 0 || len(g.Bitmap) > MaxBitmap {
		return fail(KindBadRequest, fmt.Sprintf("bitmap of %d bytes, want 1 to %d", len(g.Bitmap), MaxBitmap), g.Base)
	}
	window := int(g.Window)
	if window <= 0 || window > MaxWindow {
		window = MaxWindow
	}
	var idx []uint32
	for i := 0; i < 8*len(g.Bitmap) && len(idx) < window; i++ {
		if g.Bitmap[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		n := uint64(g.Base) + uint64(i)
		if n >= 1<<31 {
			return fail(KindBadRequest, "chunk index out of range", g.Base)
		}
		idx = append(idx, uint32(n))
	}
	// Chunks go out one after another: Data travels with QoS 0 on a Conn,
	// so a publish returns once it is written and nothing waits for an
	// acknowledgement; the store hands out its bytes without a copy.
	d := &Data{Offer: g.Offer, Comp: g.Comp, Seq: g.Seq}
	for _, i := range idx {
		b, err := s.store.Chunk(g.Offer, int(g.Comp), int(i))
		if err != nil {
			return fail(kindOf(err), err.Error(), i)
		}
		// Counted before publishing: the device may have it before Publish returns.
		s.Stats.Chunks.Add(1)
		s.Stats.Bytes.Add(uint64(len(b)))
		d.Index, d.Bytes = i, b
		if err := s.link.Publish(ctx, topic, d); err != nil {
			return err
		}
	}
	return nil
}

func kindOf(err error) ErrorKind {
	if errors.Is(err, ErrNotFound) {
		return KindNotFound
	}
	return KindInternal
}

// OfferSet is a concurrency-safe Offered for small hubs and tests: the offers
// made to each device, with an optional expiry.
type OfferSet struct {
	mu sync.Mutex
	m  map[string]map[string]time.Time
}

// Add records that offerID was made to device, valid until expires (zero: no expiry).
func (o *OfferSet) Add(device, offerID string, expires time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[string]map[string]time.Time{}
	}
	if o.m[device] == nil {
		o.m[device] = map[string]time.Time{}
	}
	o.m[device][offerID] = expires
}

// Remove withdraws offerID from device.
func (o *OfferSet) Remove(device, offerID string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.m[device], offerID)
}

// Offered implements Offered.
func (o *OfferSet) Offered(device, offerID string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	exp, ok := o.m[device][offerID]
	return ok && (exp.IsZero() || time.Now().Before(exp))
}
