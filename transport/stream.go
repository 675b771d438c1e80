package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
)

// MaxBitmap caps Get.Bitmap in bytes: one Get spans at most 8·MaxBitmap chunk indexes.
const MaxBitmap = 1024

// MaxWindow caps the chunks outstanding per Get a Server honours.
const MaxWindow = 256

// Link is what a Fetcher or a Server needs of a connection; *Conn is one.
// Publish must be done with m when it returns (encode it, not keep it): a
// Server reuses one Data for the chunks of a request.
type Link interface {
	Publish(ctx context.Context, topic string, m Message) error
	Subscribe(filter string, h Handler) error
}

// Progress remembers, across restarts, which chunks of the component being
// fetched are already written and verified. comp is the component index in
// the manifest. MarkDone is called only after WriteAt returned; an
// implementation that persists the set must make the sink's data durable
// (fsync) no later than the set that claims it, e.g. by syncing both every N
// chunks.
type Progress interface {
	Done(comp, idx int) bool
	MarkDone(comp, idx int) error
}

// Local reads chunks the device already holds (the active slot's chunk index)
// by their uncompressed sha256 into dst (len(dst) is the chunk length) and
// reports whether it had it. The Fetcher checks the hash of what it returns.
type Local interface {
	ReadChunk(sha256 []byte, dst []byte) (bool, error)
}

// FetchOptions tunes a Fetcher. Zero values take the defaults.
type FetchOptions struct {
	// Window is the most chunks outstanding at a time. Default 16.
	Window int
	// Timeout without any progress after which outstanding chunks are asked
	// for again. Default 10s.
	Timeout time.Duration
	// MaxRetries is how many timeouts in a row without progress end a fetch
	// with ErrGaveUp. Default 32.
	MaxRetries int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// FetchStats counts what a Fetcher moved. Safe for concurrent reads.
type FetchStats struct {
	Requests       atomic.Uint64 // Gets published
	Chunks         atomic.Uint64 // chunks received, verified and written
	Bytes          atomic.Uint64 // stored bytes received in Data messages (all of them)
	Duplicates     atomic.Uint64 // chunks received that were already done or not asked for
	DuplicateBytes atomic.Uint64 // their stored bytes
	Corrupt        atomic.Uint64 // chunks that failed verification
	LocalChunks    atomic.Uint64 // chunks copied from Local (delta)
	LocalBytes     atomic.Uint64 // their uncompressed bytes
	Overflow       atomic.Uint64 // Data dropped because the receive queue was full
	Retries        atomic.Uint64 // timeouts that re-requested outstanding chunks
}

// Fetcher downloads the signed manifest and the chunks of offered bundles on
// a device. One Fetcher serves one device connection; its fetches run one at
// a time.
type Fetcher struct {
	link  Link
	get   string
	opts  FetchOptions
	log   *slog.Logger
	in    chan *Data
	mu    sync.Mutex // one fetch at a time
	seq   atomic.Uint32
	Stats FetchStats
}

// NewFetcher subscribes to the device's data topic on l and returns a Fetcher
// that publishes its requests on the device's get topic.
func NewFetcher(l Link, device string, o FetchOptions) (*Fetcher, error) {
	if o.Window <= 0 {
		o.Window = 16
	}
	if o.Window > MaxWindow {
		o.Window = MaxWindow
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 32
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	get, err := Topic(device, ChGet)
	if err != nil {
		return nil, fmt.Errorf("new fetcher: %w", err)
	}
	data, _ := Topic(device, ChData)
	f := &Fetcher{link: l, get: get, opts: o, log: o.Logger.With("device", device),
		in: make(chan *Data, 4*o.Window+16)}
	if err := l.Subscribe(data, f.deliver); err != nil {
		return nil, fmt.Errorf("new fetcher: %w", err)
	}
	return f, nil
}

// deliver runs on the connection's receive goroutine and never blocks: when
// the queue is full the chunk is dropped and asked for again later.
func (f *Fetcher) deliver(_ string, m Message) {
	d, ok := m.(*Data)
	if !ok {
		return
	}
	select {
	case f.in <- d:
	default:
		f.Stats.Overflow.Add(1)
	}
}

func (f *Fetcher) send(ctx context.Context, g *Get) error {
	g.Seq = f.seq.Add(1)
	if err := f.link.Publish(ctx, f.get, g); err != nil {
		return err
	}
	f.Stats.Requests.Add(1)
	return nil
}

func refused(d *Data) error {
	return fmt.Errorf("%w: %s: %s", ErrRefused, d.Err, d.Detail)
}

// Manifest fetches the signed manifest of offer o. When o.Digest is set, the
// bytes must hash to it. The caller verifies the signature
// (bundle.VerifyManifest) before using anything in it.
func (f *Fetcher) Manifest(ctx context.Context, o *Offer) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drain()
	g := &Get{Offer: o.ID, Digest: o.Digest, Manifest: true, Window: 1}
	timer := time.NewTimer(f.opts.Timeout)
	defer timer.Stop()
	for tries := 0; ; {
		up := f.reconnected()
		if err := f.send(ctx, g); err != nil {
			return nil, fmt.Errorf("fetch manifest of offer %s: %w", o.ID, err)
		}
		resetTimer(timer, f.opts.Timeout)
		b, err := f.awaitManifest(ctx, o, timer.C, up)
		if err != nil || b != nil {
			return b, err
		}
		if up != nil && isClosed(up) {
			continue // asked again at once after a reconnect, not a retry
		}
		tries++
		f.Stats.Retries.Add(1)
		if tries >= f.opts.MaxRetries {
			return nil, fmt.Errorf("fetch manifest of offer %s: %w after %d requests", o.ID, ErrGaveUp, tries)
		}
	}
}

// awaitManifest returns the manifest bytes, an error, or nil, nil on timeout.
func (f *Fetcher) awaitManifest(ctx context.Context, o *Offer, timeout <-chan time.Time, up <-chan struct{}) ([]byte, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fetch manifest of offer %s: %w", o.ID, ctx.Err())
		case <-timeout:
			return nil, nil
		case <-up:
			return nil, nil
		case d := <-f.in:
			f.Stats.Bytes.Add(uint64(len(d.Bytes)))
			if !d.Manifest || d.Offer != o.ID {
				f.dup(d)
				continue
			}
			if d.Err != KindNone {
				return nil, fmt.Errorf("fetch manifest of offer %s: %w", o.ID, refused(d))
			}
			if len(d.Bytes) == 0 {
				return nil, fmt.Errorf("fetch manifest of offer %s: %w: empty", o.ID, ErrCorrupt)
			}
			if len(o.Digest) > 0 {
				if sum := sha256.Sum256(d.Bytes); !bytes.Equal(sum[:], o.Digest) {
					return nil, fmt.Errorf("fetch manifest of offer %s: %w: digest mismatch", o.ID, ErrCorrupt)
				}
			}
			return d.Bytes, nil
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// drain discards answers left over from an earlier fetch.
func (f *Fetcher) drain() {
	for {
		select {
		case <-f.in:
			f.Stats.Duplicates.Add(1)
		default:
			return
		}
	}
}

// Request names one component to fetch.
type Request struct {
	Offer  string            // offer id
	Digest []byte            // manifest digest from the offer
	Index  int               // component index in the manifest
	Comp   *bundle.Component // the verified component (its signed chunk table)
	Sink   io.WriterAt       // receives each chunk's uncompressed bytes at Chunk.Offset
	Done   Progress          // persisted set of chunks already written
	Local  Local             // optional: chunks the device already holds
}

// Fetch writes every chunk of r.Comp that r.Done does not list into r.Sink:
// first the ones r.Local has (their hash checked), then the rest from the
// hub with at most Window outstanding, each verified with VerifyChunk before
// it is written and marked done. Identical chunks are fetched once. It
// returns ErrGaveUp after MaxRetries timeouts in a row without progress, an
// error wrapping ErrRefused when the hub refuses, or ctx's error.
func (f *Fetcher) Fetch(ctx context.Context, r Request) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Comp == nil || r.Sink == nil || r.Done == nil {
		return errors.New("fetch: request needs Comp, Sink and Done")
	}
	if err := f.fetch(ctx, r); err != nil {
		return fmt.Errorf("fetch component %q: %w", r.Comp.Name, err)
	}
	return nil
}

func (f *Fetcher) fetch(ctx context.Context, r Request) error {
	c := r.Comp
	key := func(i int) [32]byte {
		var h [32]byte
		copy(h[:], c.Chunks[i].SHA256)
		return h
	}
	// Group the missing chunks by hash: one download serves them all.
	groups := map[[32]byte][]int{}
	var order []int // representative index of every group, ascending
	for i := range c.Chunks {
		if r.Done.Done(r.Index, i) {
			continue
		}
		h := key(i)
		if _, ok := groups[h]; !ok {
			order = append(order, i)
		}
		groups[h] = append(groups[h], i)
	}
	write := func(rep int, plain []byte) error {
		for _, i := range groups[key(rep)] {
			if _, err := r.Sink.WriteAt(plain, int64(c.Chunks[i].Offset)); err != nil {
				return fmt.Errorf("write chunk %d: %w", i, err)
			}
			if err := r.Done.MarkDone(r.Index, i); err != nil {
				return fmt.Errorf("mark chunk %d done: %w", i, err)
			}
		}
		return nil
	}

	// Delta: copy what the device already holds.
	var pending []int
	if r.Local != nil {
		buf := make([]byte, 0, bundle.MaxChunk)
		for _, i := range order {
			ch := &c.Chunks[i]
			buf = buf[:ch.Length]
			ok, err := r.Local.ReadChunk(ch.SHA256, buf)
			if err != nil {
				f.log.Warn("local chunk read failed", "chunk", i, "err", err)
				ok = false
			}
			if ok {
				if sum := sha256.Sum256(buf); !bytes.Equal(sum[:], ch.SHA256) {
					f.log.Warn("local chunk has the wrong hash", "chunk", i)
					ok = false
				}
			}
			if !ok {
				pending = append(pending, i)
				continue
			}
			if err := write(i, buf); err != nil {
				return err
			}
			f.Stats.LocalChunks.Add(uint64(len(groups[key(i)])))
			f.Stats.LocalBytes.Add(uint64(ch.Length) * uint64(len(groups[key(i)])))
		}
	} else {
		pending = order
	}
	if len(pending) == 0 {
		return nil
	}

	f.drain()
	outstanding := map[int]bool{}
	next := 0 // index into pending of the next chunk never asked for
	left := len(pending)
	retries := 0
	timer := time.NewTimer(f.opts.Timeout)
	defer timer.Stop()
	batch := max(1, f.opts.Window/4)

	ask := func(idx []int) error {
		for len(idx) > 0 {
			base := idx[0]
			n := 0
			for n < len(idx) && idx[n]-base < 8*MaxBitmap {
				n++
			}
			bits := make([]byte, (idx[n-1]-base)/8+1)
			for _, i := range idx[:n] {
				bits[(i-base)/8] |= 1 << ((i - base) % 8)
			}
			g := &Get{Offer: r.Offer, Digest: r.Digest, Comp: uint32(r.Index), Base: uint32(base), Bitmap: bits, Window: uint32(f.opts.Window)}
			if err := f.send(ctx, g); err != nil {
				return err
			}
			idx = idx[n:]
		}
		return nil
	}
	fill := func() error {
		free := f.opts.Window - len(outstanding)
		if next >= len(pending) || free < min(batch, len(pending)-next) {
			return nil
		}
		var idx []int
		for ; free > 0 && next < len(pending); free-- {
			outstanding[pending[next]] = true
			idx = append(idx, pending[next])
			next++
		}
		return ask(idx)
	}

	again := func() error {
		idx := make([]int, 0, len(outstanding))
		for i := range outstanding {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		f.log.Debug("re-requesting outstanding chunks", "count", len(idx), "retry", retries)
		return ask(idx)
	}
	up := f.reconnected()

	for left > 0 {
		if err := fill(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-up:
			// The link came back: what was in flight when it went down
			// (requests and answers) may be lost, so ask at once instead
			// of waiting for the timeout.
			up = f.reconnected()
			if err := again(); err != nil {
				return err
			}
			resetTimer(timer, f.opts.Timeout)
		case <-timer.C:
			retries++
			f.Stats.Retries.Add(1)
			if retries >= f.opts.MaxRetries {
				return fmt.Errorf("%w: %d requests in a row unanswered, %d chunks missing", ErrGaveUp, retries, left)
			}
			if err := again(); err != nil {
				return err
			}
			timer.Reset(f.opts.Timeout)
		case d := <-f.in:
			f.Stats.Bytes.Add(uint64(len(d.Bytes)))
			if d.Offer != r.Offer || d.Manifest || int(d.Comp) != r.Index {
				f.dup(d)
				continue
			}
			if d.Err != KindNone {
				return refused(d)
			}
			i := int(d.Index)
			if !outstanding[i] {
				f.dup(d)
				continue
			}
			plain, err := c.VerifyChunk(i, d.Bytes)
			if err != nil {
				// Asked for again on the next timeout; a hub that keeps
				// sending garbage runs into MaxRetries.
				f.Stats.Corrupt.Add(1)
				f.log.Warn("chunk failed verification", "chunk", i, "err", err)
				continue
			}
			if err := write(i, plain); err != nil {
				return err
			}
			delete(outstanding, i)
			left--
			retries = 0
			f.Stats.Chunks.Add(1)
			resetTimer(timer, f.opts.Timeout)
		}
	}
	return nil
}

// reconnected returns a channel closed when the link's connection comes
// back after a loss, or nil when the link does not tell.
func (f *Fetcher) reconnected() <-chan struct{} {
	if r, ok := f.link.(interface{ Reconnected() <-chan struct{} }); ok {
		return r.Reconnected()
	}
	return nil
}

func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}

func (f *Fetcher) dup(d *Data) {
	f.Stats.Duplicates.Add(1)
	f.Stats.DuplicateBytes.Add(uint64(len(d.Bytes)))
}
