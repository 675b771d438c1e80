package device

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/autopatcher/autopatcher/bundle"
)

// The install data path is a pipeline so that reading the bundle, hashing
// (and decompressing) chunks and writing the slot overlap:
//
//	reader goroutine:   one ReadAt per batch of consecutive stored chunks
//	                    (up to batchBytes) into a pooled buffer
//	verify goroutines:  Component.VerifyChunk (sha256, zstd) of each chunk
//	                    of a batch, one goroutine per CPU, batches in
//	                    parallel; each yields after a batch
//	caller:             hands verified runs of chunks, in chunk order, to
//	                    the slot writer (WriteOwned: no copy), which
//	                    writes them from its own goroutine and returns the
//	                    buffer to the pool once written
//
// Batching keeps syscalls and goroutine hand-offs per byte low (chunks
// average 64 KiB). At most pipelineDepth batch buffers (each batchBytes,
// at least bundle.MaxChunk) exist at a time, so memory does not grow with
// the component size; there are enough for the writer to have the next
// batches queued while the verifiers work on later ones.
const (
	pipelineDepth = 8
	batchBytes    = 512 << 10
)

// spareProc raises GOMAXPROCS by one while an image is written and
// returns the function that lowers it again. The slot writer spends its
// time in O_DIRECT writes; each time one returns it needs a P to queue the
// next, and with every P busy verifying chunks it would wait until a
// verifier yields while the medium idles. With a spare P it runs at once:
// the kernel, not the Go scheduler, shares the cores, and it preempts for
// a thread waking from I/O within microseconds. Writes that overlap (one
// process with several engines) share the one spare P; the last to end
// restores the setting found by the first. Setting GOMAXPROCS stops the
// runtime from following CPU affinity and cgroup quota changes, so where
// the setting was the runtime's own (no GOMAXPROCS in the environment)
// the last one hands it back to the runtime instead.
func spareProc() func() {
	spare.Lock()
	defer spare.Unlock()
	if spare.writers == 0 {
		spare.base = runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(spare.base + 1)
	}
	spare.writers++
	var once sync.Once
	return func() {
		once.Do(func() {
			spare.Lock()
			defer spare.Unlock()
			if spare.writers--; spare.writers == 0 {
				if os.Getenv("GOMAXPROCS") == "" {
					runtime.SetDefaultGOMAXPROCS()
				} else {
					runtime.GOMAXPROCS(spare.base)
				}
			}
		})
	}
}

var spare struct {
	sync.Mutex
	writers int // image writes under way
	base    int // GOMAXPROCS before the first of them
}

// ErrShortPayload means a component's verified bytes do not add up to its declared size.
var ErrShortPayload = errors.New("device: payload size mismatch")

// piece is a batch of chunks on its way through the pipeline; done is
// closed once it is verified.
type piece struct {
	first  int // index of the first chunk
	ext    []bundle.Extent
	stored []byte   // stored bytes of all chunks of the batch
	segs   [][]byte // verified plain bytes, in order (raw chunks joined)
	buf    *[]byte  // pooled buffer, back to pool once refs drops to zero
	pool   chan<- *[]byte
	refs   atomic.Int32 // the consumer, plus each segment a writer still holds
	err    error        // after the chunks in segs
	done   chan struct{}
}

// unref drops one reference to p's buffer; the last one returns it to
// the pool.
func (p *piece) unref() {
	if p.refs.Add(-1) == 0 && p.buf != nil {
		p.pool <- p.buf
	}
}

// ownedWriter is a writer that may hold on to b after WriteOwned returns
// (to write it later, without copying); it calls done once it no longer
// needs b, and b is left untouched until then.
type ownedWriter interface {
	WriteOwned(b []byte, done func()) error
}

// chunkStream is an io.Reader (and io.WriterTo) of a component's verified
// payload, read from a bundle file by chunk extents.
type chunkStream struct {
	order  chan *piece // pieces in chunk order, for the consumer
	pool   chan *[]byte
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cur    *piece
	seg    int // next segment of cur
	rest   []byte
	whole  bool // rest is a whole segment of cur
	n      uint64
	size   uint64
	name   string
	err    error
}

// newChunkStream starts the reader and verify goroutines for component c
// whose stored chunks lie at ext in ra.
func newChunkStream(ctx context.Context, ra io.ReaderAt, c *bundle.Component, ext []bundle.Extent) *chunkStream {
	ctx, cancel := context.WithCancel(ctx)
	s := &chunkStream{
		order:  make(chan *piece, pipelineDepth),
		pool:   make(chan *[]byte, pipelineDepth),
		cancel: cancel,
		size:   c.Size,
		name:   c.Name,
	}
	// plain[i]: payload offset of chunk i, from the signed chunk table.
	plain := make([]int64, len(ext)+1)
	for i := range ext {
		if i < len(c.Chunks) {
			plain[i+1] = plain[i] + int64(c.Chunks[i].Length)
		}
	}
	work := make(chan *piece, pipelineDepth)
	workers := min(max(runtime.GOMAXPROCS(0), 1), 4)
	s.wg.Add(1 + workers)
	go func() { // reader
		defer s.wg.Done()
		made := 0
		defer close(work)
		defer close(s.order)
		for i := 0; i < len(ext); {
			// Buffers are made as the pipeline fills (the first batch is
			// read at once, and a small component needs few), up to
			// pipelineDepth; after that they come back through the pool.
			var buf *[]byte
			select {
			case buf = <-s.pool:
			default:
				if made < pipelineDepth {
					b := make([]byte, max(batchBytes, bundle.MaxChunk)+directAlign)
					buf = &b
					made++
					break
				}
				select {
				case buf = <-s.pool:
				case <-ctx.Done():
					return
				}
			}
			p := &piece{first: i, buf: buf, pool: s.pool, done: make(chan struct{})}
			p.refs.Store(1)
			// The batch: chunks stored back to back that fit the buffer.
			j, total := i, int64(0)
			for j < len(ext) {
				e := ext[j]
				if e.Length < 0 || e.Length > bundle.MaxChunk {
					if j == i {
						p.err = fmt.Errorf("read component %q chunk %d: stored length %d: %w", c.Name, j, e.Length, bundle.ErrMalformed)
					}
					break
				}
				if j > i && (e.Offset != ext[i].Offset+total || total+e.Length > batchBytes) {
					break
				}
				total += e.Length
				j++
			}
			if p.err == nil {
				// Raw chunks are placed in the buffer at their payload
				// offset modulo a page, so that a slot writer can write
				// their whole pages with O_DIRECT straight from it.
				pad := plain[i] % directAlign
				p.ext = ext[i:j]
				if _, err := ra.ReadAt((*buf)[pad:pad+total], ext[i].Offset); err != nil {
					if errors.Is(err, io.EOF) {
						err = bundle.ErrTruncated
					}
					p.err = fmt.Errorf("read component %q chunk %d: %w", c.Name, i, err)
				} else {
					p.stored = (*buf)[pad : pad+total]
				}
			}
			i = j
			select {
			case s.order <- p:
			case <-ctx.Done():
				return
			}
			if p.err != nil {
				close(p.done)
				return
			}
			work <- p // never blocks for long: workers drain it, order bounds it
		}
	}()
	for range workers {
		go func() { // verifier
			defer s.wg.Done()
			for p := range work {
				p.verify(c)
				close(p.done)
				runtime.Gosched()
			}
		}()
	}
	return s
}

// verify checks each chunk of p, joining runs of raw chunks (verified in
// place, adjacent in the buffer) into one segment.
func (p *piece) verify(c *bundle.Component) {
	var off, runStart int64
	run := false
	for k, e := range p.ext {
		stored := p.stored[off : off+e.Length : off+e.Length]
		data, err := verifyChunk(c, p.first+k, stored)
		if err != nil {
			if run {
				p.segs = append(p.segs, p.stored[runStart:off])
			}
			p.err = err
			return
		}
		raw := len(data) > 0 && &data[0] == &stored[0] && len(data) == len(stored)
		switch {
		case raw && !run:
			run, runStart = true, off
		case !raw:
			if run {
				p.segs = append(p.segs, p.stored[runStart:off])
				run = false
			}
			if len(data) > 0 {
				p.segs = append(p.segs, data)
			}
		}
		off += e.Length
	}
	if run {
		p.segs = append(p.segs, p.stored[runStart:off])
	}
}

// release drops the consumer's reference to the current piece.
func (s *chunkStream) release() {
	if s.cur != nil {
		s.cur.unref()
		s.cur = nil
	}
}

// next makes s.rest the next verified segment.
func (s *chunkStream) next() error {
	for s.cur == nil || s.seg == len(s.cur.segs) {
		if s.cur != nil && s.cur.err != nil {
			return s.cur.err
		}
		s.release()
		p, ok := <-s.order
		if !ok {
			if s.n != s.size {
				return fmt.Errorf("read component %q: %w: %d of %d bytes", s.name, ErrShortPayload, s.n, s.size)
			}
			return io.EOF
		}
		<-p.done
		s.cur, s.seg = p, 0
	}
	d := s.cur.segs[s.seg]
	s.seg++
	s.n += uint64(len(d))
	if s.n > s.size {
		return fmt.Errorf("read component %q: %w: more than %d bytes", s.name, ErrShortPayload, s.size)
	}
	s.rest, s.whole = d, true
	return nil
}

// Read implements io.Reader.
func (s *chunkStream) Read(b []byte) (int, error) {
	for len(s.rest) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.err = s.next(); s.err != nil {
			return 0, s.err
		}
	}
	n := copy(b, s.rest)
	s.rest, s.whole = s.rest[n:], false
	return n, nil
}

// WriteTo implements io.WriterTo, writing runs of chunks without a copy.
// An ownedWriter gets whole segments and holds the piece's buffer until
// it is done with them, so the next pieces are verified meanwhile.
func (s *chunkStream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	ow, owned := w.(ownedWriter)
	for {
		if owned && s.whole && len(s.rest) > 0 {
			p := s.cur
			p.refs.Add(1)
			err := ow.WriteOwned(s.rest, p.unref)
			if err != nil {
				return total, err
			}
			total += int64(len(s.rest))
			s.rest, s.whole = nil, false
			continue
		}
		if len(s.rest) > 0 {
			n, err := w.Write(s.rest)
			total += int64(n)
			s.rest = s.rest[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if s.err != nil {
			if s.err == io.EOF {
				return total, nil
			}
			return total, s.err
		}
		s.err = s.next()
	}
}

// Close stops the goroutines.
func (s *chunkStream) Close() error {
	s.cancel()
	for p := range s.order { // drain so the reader can exit
		<-p.done
	}
	s.wg.Wait()
	return nil
}

// verifyChunk checks chunk i of c. A chunk stored raw (stored length equal
// to its length, the format's rule) is hashed in place; others go through
// Component.VerifyChunk, which decompresses into a new buffer.
func verifyChunk(c *bundle.Component, i int, stored []byte) ([]byte, error) {
	if i < 0 || i >= len(c.Chunks) {
		return nil, fmt.Errorf("component %q chunk %d: no such chunk: %w", c.Name, i, bundle.ErrCorruptChunk)
	}
	ch := c.Chunks[i]
	if uint32(len(stored)) != ch.Length || ch.StoredLength != ch.Length {
		return c.VerifyChunk(i, stored)
	}
	sum := sha256.Sum256(stored)
	if subtle.ConstantTimeCompare(sum[:], ch.SHA256) != 1 {
		return nil, fmt.Errorf("component %q chunk %d: sha256 mismatch: %w", c.Name, i, bundle.ErrCorruptChunk)
	}
	return stored, nil
}

// progressWriter counts bytes for a progress callback.
type progressWriter struct {
	w  io.Writer
	n  uint64
	fn func(n uint64)
}

// WriteOwned passes b on to an ownedWriter (see chunkStream.WriteTo),
// else writes it at once.
func (p *progressWriter) WriteOwned(b []byte, done func()) error {
	ow, ok := p.w.(ownedWriter)
	if !ok {
		_, err := p.Write(b)
		done()
		return err
	}
	if err := ow.WriteOwned(b, done); err != nil {
		return err
	}
	p.n += uint64(len(b))
	if p.fn != nil {
		p.fn(p.n)
	}
	return nil
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += uint64(n)
	if p.fn != nil {
		p.fn(p.n)
	}
	return n, err
}

// openSlotFile opens an image slot for writing. Block devices must exist;
// file slots are created.
func openSlotFile(path, typ string) (*os.File, error) {
	flags := os.O_WRONLY
	if typ == "file" {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open slot: %w", err)
	}
	return f, nil
}

// Read-back reads up to readBackBuf bytes at a time (at least a whole
// chunk, bundle.MaxChunk, plus a page either side). directAlign is the
// O_DIRECT offset, length and address alignment, of the read-back as of
// the slot writer (directWriter), whose in-place writes rely on the chunk
// pipeline placing raw chunks at their payload offset modulo it.
const (
	readBackBuf = 512 << 10
	directAlign = 4096
)

// readBacker verifies a written component by reading it back from the
// medium (O_DIRECT where the file system has it, else after dropping its
// cached pages) and checking every chunk's sha256 against the signed
// chunk table; the chunks cover the payload back to back, so together
// they prove all of it. It runs while the slot is still being written:
// each range whose write reached the medium is reported to flushed, in
// order, and the whole chunks inside it are read back at once. One
// goroutine reads batches of consecutive chunks into page-aligned
// buffers; the chunks are hashed by up to readBackWorkers goroutines, so
// the read-back's hashing is spread over the cores rather than one
// running sha256 on one. finish reads what is left after the final fsync
// and returns the verdict.
type readBacker struct {
	f, d   *os.File // the file, and its O_DIRECT handle or nil
	chunks []bundle.Chunk
	rel    []func()      // releases the buffers
	size   int64         // set by finish before ranges is closed: read up to here
	ranges chan [2]int64 // flushed ranges, in order
	done   chan struct{} // closed once the reader and the hashers have ended

	mu  sync.Mutex
	bad int   // index of the first chunk found bad (-1: aborted), else math.MaxInt
	err error // its error, or a read error
}

// readBackWorkers bounds the goroutines that hash read-back chunks.
const readBackWorkers = 3

// block is a buffer of read-back bytes on its way to a hasher: the
// region starting at file offset base, holding chunks [first, last).
type block struct {
	b           []byte
	base        int64
	first, last int
}

// newReadBacker starts the read-back of the component whose chunk table
// is chunks, written to path.
func newReadBacker(ctx context.Context, path string, chunks []bundle.Chunk) (*readBacker, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read back %s: %w", path, err)
	}
	d, _ := openDirectRead(path)
	workers := min(max(runtime.GOMAXPROCS(0), 1), readBackWorkers)
	rb := &readBacker{f: f, d: d, chunks: chunks, bad: math.MaxInt,
		ranges: make(chan [2]int64, 1024), done: make(chan struct{})}
	free := make(chan []byte, workers+1)
	for range workers + 1 {
		b, release, err := mmapBuf(readBackBuf)
		if err != nil {
			b, release = make([]byte, readBackBuf), func() {}
		}
		free <- b
		rb.rel = append(rb.rel, release)
	}
	work := make(chan block, workers+1)
	var wg sync.WaitGroup
	wg.Add(1 + workers)
	go func() { // reader
		defer wg.Done()
		defer close(work)
		var landed int64 // the medium holds [0, landed)
		next := 0        // the first chunk not read back yet
		for r := range rb.ranges {
			if rb.failed() || r[0] != landed {
				continue
			}
			landed = r[0] + r[1]
			next = rb.readChunks(ctx, next, landed, false, free, work)
		}
		if !rb.failed() {
			next = rb.readChunks(ctx, next, rb.size, true, free, work)
		}
		var covered int64
		if n := len(rb.chunks); n > 0 {
			covered = rb.chunkEnd(n - 1)
		}
		if !rb.failed() && (next < len(rb.chunks) || covered != rb.size) {
			rb.fail(next, fmt.Errorf("read back %s: the chunk table covers %d bytes, %d were written: %w", path, covered, rb.size, ErrShortPayload))
		}
	}()
	for range workers {
		go func() { // hasher
			defer wg.Done()
			for k := range work {
				rb.check(k)
				free <- k.b[:cap(k.b)]
			}
		}()
	}
	go func() {
		wg.Wait()
		close(rb.done)
	}()
	return rb, nil
}

// chunkEnd is the file offset just after chunk i.
func (rb *readBacker) chunkEnd(i int) int64 {
	return int64(rb.chunks[i].Offset) + int64(rb.chunks[i].Length)
}

// readChunks reads back the chunks from next on that lie below limit, a
// batch per buffer, and queues them for hashing; it returns the first
// chunk not read. A read through the O_DIRECT handle covers whole pages,
// so before the end (final unset) a chunk waits until the page holding
// its last byte has landed whole.
func (rb *readBacker) readChunks(ctx context.Context, next int, limit int64, final bool, free chan []byte, work chan<- block) int {
	f, direct := rb.f, rb.d != nil
	// A batch is read from base up to end(last chunk): the chunks' bytes
	// exactly, or through the O_DIRECT handle the whole pages holding them
	// (a page two batches share is read twice).
	base, end := func(i int) int64 { return int64(rb.chunks[i].Offset) }, rb.chunkEnd
	if direct {
		f = rb.d
		base = func(i int) int64 { return int64(rb.chunks[i].Offset) &^ (directAlign - 1) }
		end = func(i int) int64 { return (rb.chunkEnd(i) + directAlign - 1) &^ (directAlign - 1) }
	}
	reach := func(i int) bool { return rb.chunkEnd(i) <= limit && (final || end(i) <= limit) }
	for next < len(rb.chunks) && reach(next) {
		from := base(next)
		last := next + 1
		for last < len(rb.chunks) && reach(last) && end(last)-from <= readBackBuf {
			last++
		}
		var b []byte
		select {
		case b = <-free:
		case <-ctx.Done():
			rb.fail(next, fmt.Errorf("read back %s: %w", rb.f.Name(), ctx.Err()))
			return next
		}
		// A whole chunk (at most bundle.MaxChunk) and a page either side
		// always fit the buffer; the check only guards against a table that
		// was not validated.
		need := rb.chunkEnd(last-1) - from
		want := min(end(last-1)-from, int64(len(b)))
		if need > want {
			free <- b
			rb.fail(next, fmt.Errorf("read back %s: chunk %d of %d bytes: %w", rb.f.Name(), next, rb.chunks[next].Length, bundle.ErrMalformed))
			return next
		}
		if !direct {
			dropCache(f, from, need)
		}
		if m, err := f.ReadAt(b[:want], from); int64(m) < need {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			free <- b
			rb.fail(next, fmt.Errorf("read back %s at %d: %w", rb.f.Name(), from, err))
			return next
		}
		work <- block{b: b[:need], base: from, first: next, last: last}
		next = last
	}
	return next
}

// check hashes the chunks of k and records the first that differs from
// the chunk table.
func (rb *readBacker) check(k block) {
	for i := k.first; i < k.last; i++ {
		c := rb.chunks[i]
		at := int64(c.Offset) - k.base
		sum := sha256.Sum256(k.b[at : at+int64(c.Length)])
		if subtle.ConstantTimeCompare(sum[:], c.SHA256) != 1 {
			rb.fail(i, fmt.Errorf("%w: read back %s: chunk %d (%d+%d): sha256 %x, want %x", ErrVerify, rb.f.Name(), i, c.Offset, c.Length, sum, c.SHA256))
			return
		}
	}
}

// fail records err for chunk i, keeping the error of the lowest chunk.
func (rb *readBacker) fail(i int, err error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if i < rb.bad {
		rb.bad, rb.err = i, err
	}
}

func (rb *readBacker) failed() bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.err != nil
}

// flushed is called, in order, with each range that reached the medium.
func (rb *readBacker) flushed(off, n int64) { rb.ranges <- [2]int64{off, n} }

// finish reads back what is left of the first size bytes, after the
// caller's final fsync, and returns the verdict: nil when every chunk
// read back matches the chunk table.
func (rb *readBacker) finish(size uint64) error {
	rb.size = int64(size)
	close(rb.ranges)
	<-rb.done
	rb.close()
	return rb.err
}

// abort stops the read-back goroutines without a verdict.
func (rb *readBacker) abort() {
	rb.fail(-1, errors.New("read back aborted")) // the reader stops reading
	close(rb.ranges)
	<-rb.done
	rb.close()
}

func (rb *readBacker) close() {
	for _, rel := range rb.rel {
		rel()
	}
	rb.f.Close()
	if rb.d != nil {
		rb.d.Close()
	}
}

// ErrVerify means what was read back from a slot differs from what was written.
var ErrVerify = errors.New("device: read-back verification failed")
