package device

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/autopatcher/autopatcher/bundle"
)

// The install data path is a pipeline so that reading the bundle, hashing
// (and decompressing) chunks and writing the slot overlap:
//
//	reader goroutine:   ReadAt of each stored chunk into a pooled buffer
//	verify goroutines:  Component.VerifyChunk (sha256, zstd), one per CPU
//	caller:             Write to the slot in chunk order, buffer back to the pool
//
// At most pipelineDepth chunk buffers (each at most bundle.MaxChunk) exist
// at a time, so memory does not grow with the component size.
const pipelineDepth = 8

// ErrShortPayload means a component's verified bytes do not add up to its declared size.
var ErrShortPayload = errors.New("device: payload size mismatch")

// piece is one chunk on its way through the pipeline; done is closed once
// it is verified.
type piece struct {
	i    int
	data []byte  // stored bytes, then verified plain bytes
	buf  *[]byte // pooled stored buffer to release after data is consumed
	err  error
	done chan struct{}
}

// chunkStream is an io.Reader (and io.WriterTo) of a component's verified
// payload, read from a bundle file by chunk extents.
type chunkStream struct {
	order  chan *piece // pieces in chunk order, for the consumer
	pool   chan *[]byte
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cur    *piece
	rest   []byte
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
	for range pipelineDepth {
		b := make([]byte, 0, bundle.MaxChunk)
		s.pool <- &b
	}
	work := make(chan *piece, pipelineDepth)
	workers := min(max(runtime.GOMAXPROCS(0), 1), 4)
	s.wg.Add(1 + workers)
	go func() { // reader
		defer s.wg.Done()
		defer close(work)
		defer close(s.order)
		for i, e := range ext {
			var buf *[]byte
			select {
			case buf = <-s.pool:
			case <-ctx.Done():
				return
			}
			p := &piece{i: i, buf: buf, done: make(chan struct{})}
			if e.Length < 0 || e.Length > int64(cap(*buf)) {
				p.err = fmt.Errorf("read component %q chunk %d: stored length %d: %w", c.Name, i, e.Length, bundle.ErrMalformed)
			} else if _, err := ra.ReadAt((*buf)[:e.Length], e.Offset); err != nil {
				if errors.Is(err, io.EOF) {
					err = bundle.ErrTruncated
				}
				p.err = fmt.Errorf("read component %q chunk %d: %w", c.Name, i, err)
			} else {
				p.data = (*buf)[:e.Length]
			}
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
				p.data, p.err = verifyChunk(c, p.i, p.data)
				close(p.done)
			}
		}()
	}
	return s
}

func (s *chunkStream) release() {
	if s.cur != nil && s.cur.buf != nil {
		s.pool <- s.cur.buf
		s.cur.buf = nil
	}
}

func (s *chunkStream) next() error {
	s.release()
	p, ok := <-s.order
	if !ok {
		if s.n != s.size {
			return fmt.Errorf("read component %q: %w: %d of %d bytes", s.name, ErrShortPayload, s.n, s.size)
		}
		return io.EOF
	}
	<-p.done
	s.cur = p
	if p.err != nil {
		return p.err
	}
	s.n += uint64(len(p.data))
	if s.n > s.size {
		return fmt.Errorf("read component %q: %w: more than %d bytes", s.name, ErrShortPayload, s.size)
	}
	s.rest = p.data
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
	s.rest = s.rest[n:]
	return n, nil
}

// WriteTo implements io.WriterTo, writing whole chunks without a copy.
func (s *chunkStream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
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

// readBack re-reads size bytes of path from the medium (dropping the page
// cache first where the OS allows) and compares their sha256 with want.
func readBack(ctx context.Context, path string, size uint64, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read back %s: %w", path, err)
	}
	defer f.Close()
	dropCache(f, int64(size))
	h := sha256.New()
	// Two buffers: one being read while the other is hashed.
	type blk struct {
		b   []byte
		err error
	}
	const bs = 256 << 10
	full := make(chan blk, 1)
	free := make(chan []byte, 2)
	free <- make([]byte, bs)
	free <- make([]byte, bs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(full)
		var off uint64
		for off < size {
			var b []byte
			select {
			case b = <-free:
			case <-ctx.Done():
				return
			}
			n := min(uint64(len(b)), size-off)
			m, err := f.ReadAt(b[:n], int64(off))
			if err == io.EOF && uint64(m) == n {
				err = nil
			}
			if err != nil {
				full <- blk{err: fmt.Errorf("read back %s at %d: %w", path, off, err)}
				return
			}
			off += n
			full <- blk{b: b[:n]}
		}
	}()
	for k := range full {
		if k.err != nil {
			return k.err
		}
		h.Write(k.b)
		free <- k.b[:cap(k.b)]
	}
	if got := h.Sum(nil); subtle.ConstantTimeCompare(got, want) != 1 {
		return fmt.Errorf("%w: read back %s: sha256 %x, want %x", ErrVerify, path, got, want)
	}
	return nil
}

// ErrVerify means what was read back from a slot differs from what was written.
var ErrVerify = errors.New("device: read-back verification failed")
