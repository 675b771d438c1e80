package device

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"
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
// restores the setting found by the first.
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
				runtime.GOMAXPROCS(spare.base)
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

func checkSum(path string, h hash.Hash, want []byte) error {
	if got := h.Sum(nil); subtle.ConstantTimeCompare(got, want) != 1 {
		return fmt.Errorf("%w: read back %s: sha256 %x, want %x", ErrVerify, path, got, want)
	}
	return nil
}

// Read-back reads readBackBuf bytes at a time, one buffer ahead of the
// hashing. directAlign is the O_DIRECT offset, length and address
// alignment, of the read-back as of the slot writer (directWriter), whose
// in-place writes rely on the chunk pipeline placing raw chunks at their
// payload offset modulo it.
const (
	readBackBuf = 512 << 10
	directAlign = 4096
)

// readBacker verifies a slot while it is still being written: every range
// whose write reached the medium is read back from the medium (O_DIRECT
// where the file system has it, else after dropping its cached pages)
// into one running sha256, in order. One goroutine reads, another hashes,
// with two page-aligned buffers between them, for the whole write: a
// range costs a channel send. finish has the reader read the rest after
// the final fsync and checks the sum.
type readBacker struct {
	f      *os.File
	d      *os.File // O_DIRECT handle, or nil
	h      hash.Hash
	rel    [2]func()     // releases the buffers
	size   int64         // set by finish before ranges is closed: read up to here
	ranges chan [2]int64 // flushed ranges, in order
	errc   chan error
}

// block is a buffer of read-back bytes on its way to the hasher.
type block struct {
	b   []byte
	off int64
}

func newReadBacker(ctx context.Context, path string) (*readBacker, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read back %s: %w", path, err)
	}
	d, _ := openDirectRead(path)
	rb := &readBacker{f: f, d: d, h: sha256.New(), ranges: make(chan [2]int64, 1024), errc: make(chan error, 1)}
	free := make(chan []byte, len(rb.rel))
	for i := range rb.rel {
		b, release, err := mmapBuf(readBackBuf)
		if err != nil {
			b, release = make([]byte, readBackBuf), func() {}
		}
		free <- b
		rb.rel[i] = release
	}
	full := make(chan block, len(rb.rel))
	var rerr error // set before full is closed
	go func() {    // reader
		defer close(full)
		var next int64
		for r := range rb.ranges {
			if rerr != nil || r[0] != next {
				continue
			}
			rerr = rb.readRange(ctx, r[0], r[0]+r[1], free, full)
			next = r[0] + r[1]
		}
		if rerr == nil && rb.size > next {
			rerr = rb.readRange(ctx, next, rb.size, free, full)
		}
	}()
	go func() { // hasher
		for k := range full {
			rb.h.Write(k.b)
			free <- k.b[:cap(k.b)]
		}
		rb.errc <- rerr
	}()
	return rb, nil
}

// readRange reads [from, to) from the medium into buffers taken from
// free and sends each one filled to full: with the O_DIRECT handle where
// from is page-aligned (reads rounded up to whole pages), else after
// dropping the cached pages of the range.
func (rb *readBacker) readRange(ctx context.Context, from, to int64, free chan []byte, full chan<- block) error {
	f, direct := rb.d, rb.d != nil && from%directAlign == 0
	if !direct {
		f = rb.f
		dropCache(f, from, to-from)
	}
	for off := from; off < to; {
		var b []byte
		select {
		case b = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		need := min(int64(len(b)), to-off)
		want := need
		if direct {
			want = min(int64(len(b)), (need+directAlign-1)&^(directAlign-1))
		}
		m, err := f.ReadAt(b[:want], off)
		if int64(m) < need {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			free <- b
			return fmt.Errorf("read back %s at %d: %w", rb.f.Name(), off, err)
		}
		full <- block{b[:need], off}
		off += need
	}
	return nil
}

// flushed is called, in order, with each range that reached the medium.
func (rb *readBacker) flushed(off, n int64) { rb.ranges <- [2]int64{off, n} }

// finish reads back what is left of the first size bytes and checks the sum.
func (rb *readBacker) finish(ctx context.Context, size uint64, want []byte) error {
	defer rb.close()
	rb.size = int64(size)
	close(rb.ranges)
	if err := <-rb.errc; err != nil {
		return err
	}
	return checkSum(rb.f.Name(), rb.h, want)
}

// abort stops the read-back goroutines without a verdict.
func (rb *readBacker) abort() {
	close(rb.ranges)
	<-rb.errc
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
