package bundle

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash"
	"io"
	"sync"
)

// Reader reads a bundle front to back. Open verifies the signatures and the
// manifest; Next then yields each component with a reader of its verified,
// uncompressed payload.
type Reader struct {
	r       io.Reader
	o       options
	m       *Manifest
	signed  []byte
	signers []string
	dataOff int64

	next int      // index of the next component Next returns
	cur  *payload // the component being read
	err  error    // sticky

	// producer position: next chunk to read from r
	pc, pi int
	// read-ahead pipeline (nil channels when synchronous)
	started   bool
	items     chan item
	free      chan *slot
	done      chan struct{}
	closeOnce sync.Once
	syncSlot  slot
}

type slot struct{ stored, plain []byte }

// item is one verified chunk, or the end of the bundle, or an error.
type item struct {
	s         *slot
	comp, idx int
	data      []byte
	end       bool
	err       error
}

// Open reads the header and the signed section from r, verifies the
// signatures against trust, and only then decodes and validates the
// manifest. It reads nothing beyond the signed section.
func Open(r io.Reader, trust *Trust, opts ...Option) (*Reader, error) {
	o := newOptions(opts)
	_, signed, err := readSigned(r, o.limits)
	if err != nil {
		return nil, err
	}
	m, signers, err := verifySection(signed, trust, o)
	if err != nil {
		return nil, err
	}
	return &Reader{
		r: r, o: o, m: m, signed: signed, signers: signers,
		dataOff: HeaderSize + int64(len(signed)),
	}, nil
}

// readSigned reads the fixed header and the signed section it announces.
func readSigned(r io.Reader, lim Limits) (header, []byte, error) {
	h, err := readHeader(r, lim)
	if err != nil {
		return header{}, nil, err
	}
	signed, err := readN(r, int64(h.SignedLen), "signed section")
	if err != nil {
		return header{}, nil, err
	}
	return h, signed, nil
}

// readN reads exactly n bytes, growing the buffer as data arrives so that a
// header claiming a large section costs nothing unless the bytes exist.
func readN(r io.Reader, n int64, what string) ([]byte, error) {
	var buf bytes.Buffer
	got, err := buf.ReadFrom(io.LimitReader(r, n))
	if err != nil {
		return nil, readErr(what, err)
	}
	if got != n {
		return nil, readErr(what, io.ErrUnexpectedEOF)
	}
	return buf.Bytes(), nil
}

// Manifest returns the verified manifest.
func (r *Reader) Manifest() *Manifest { return r.m }

// Signers returns the ids of the trusted keys whose signatures verified.
func (r *Reader) Signers() []string { return r.signers }

// SignedManifest returns the signed section exactly as found in the file; a
// hub forwards it to devices, which check it with VerifyManifest.
func (r *Reader) SignedManifest() []byte { return r.signed }

// DataOffset is the file offset of the first stored chunk (see Layout).
func (r *Reader) DataOffset() int64 { return r.dataOff }

// Next returns the next component and a reader of its verified, uncompressed
// payload. Whatever the caller left unread of the previous component is read
// and verified first. After the last component Next checks that nothing
// follows the last chunk and returns io.EOF. Errors are sticky.
func (r *Reader) Next() (*Component, io.Reader, error) {
	if r.err != nil {
		return nil, nil, r.err
	}
	if r.cur != nil {
		if _, err := io.Copy(io.Discard, r.cur); err != nil {
			return nil, nil, err
		}
		r.cur = nil
	}
	if r.next == len(r.m.Components) {
		it := r.get()
		switch {
		case it.err != nil:
			r.err = it.err
		case !it.end:
			r.err = fmt.Errorf("read bundle: internal: chunk after the last component: %w", ErrMalformed)
		default:
			r.err = io.EOF
		}
		r.Close()
		return nil, nil, r.err
	}
	c := &r.m.Components[r.next]
	p := &payload{r: r, c: c, ci: r.next}
	if r.o.payloadHash {
		p.h = sha256.New()
	}
	r.next++
	r.cur = p
	return c, p, nil
}

// Close stops the read-ahead goroutine. It is needed only when a Reader is
// abandoned before Next returned io.EOF or an error; it does not close the
// underlying reader.
func (r *Reader) Close() error {
	r.closeOnce.Do(func() {
		if r.done != nil {
			close(r.done)
		}
	})
	return nil
}

// get returns the next verified chunk, from the read-ahead goroutine or
// synchronously.
func (r *Reader) get() item {
	if r.o.readAhead == 0 {
		return r.produce(&r.syncSlot)
	}
	if !r.started {
		r.started = true
		n := r.o.readAhead
		r.items = make(chan item, n)
		r.free = make(chan *slot, n+1)
		r.done = make(chan struct{})
		for range n + 1 {
			r.free <- new(slot)
		}
		go r.run()
	}
	select {
	case it := <-r.items:
		return it
	case <-r.done:
		return item{err: fmt.Errorf("read bundle: reader closed: %w", io.ErrClosedPipe)}
	}
}

func (r *Reader) release(s *slot) {
	if s != nil && r.free != nil {
		select {
		case r.free <- s:
		default:
		}
	}
}

// run is the read-ahead goroutine: it owns r.r and the producer position.
func (r *Reader) run() {
	for {
		var s *slot
		select {
		case s = <-r.free:
		case <-r.done:
			return
		}
		it := r.produce(s)
		select {
		case r.items <- it:
		case <-r.done:
			return
		}
		if it.end || it.err != nil {
			return
		}
	}
}

// produce reads and verifies the next stored chunk into s.
func (r *Reader) produce(s *slot) item {
	comps := r.m.Components
	for r.pc < len(comps) && r.pi >= len(comps[r.pc].Chunks) {
		r.pc++
		r.pi = 0
	}
	if r.pc == len(comps) {
		var b [1]byte
		n, err := io.ReadFull(r.r, b[:])
		switch {
		case n > 0:
			return item{err: fmt.Errorf("read bundle: data after the last chunk: %w", ErrMalformed)}
		case err == io.EOF:
			return item{end: true}
		default:
			return item{err: fmt.Errorf("read bundle end: %w", err)}
		}
	}
	c := &comps[r.pc]
	i := r.pi
	r.pi++
	ch := &c.Chunks[i]
	if cap(s.stored) < int(ch.StoredLength) {
		s.stored = make([]byte, MaxChunk)
	}
	s.stored = s.stored[:ch.StoredLength]
	if _, err := io.ReadFull(r.r, s.stored); err != nil {
		return item{err: fmt.Errorf("component %q chunk %d: %w", c.Name, i, readErr("stored chunk", err))}
	}
	if ch.StoredLength != ch.Length && cap(s.plain) < int(ch.Length) {
		s.plain = make([]byte, 0, MaxChunk)
	}
	data, err := c.verifyChunk(i, s.stored, s.plain)
	if err != nil {
		return item{err: err}
	}
	return item{s: s, comp: r.pc, idx: i, data: data}
}

// payload is the io.Reader of one component's verified bytes.
type payload struct {
	r   *Reader
	c   *Component
	ci  int
	idx int // next chunk to fetch
	cur item
	off int
	h   hash.Hash
	err error
}

// fill makes sure unread bytes are buffered, or returns io.EOF at the end
// of the component, or the error that stopped it.
func (p *payload) fill() error {
	if p.err != nil {
		return p.err
	}
	if p.off < len(p.cur.data) {
		return nil
	}
	p.r.release(p.cur.s)
	p.cur = item{}
	p.off = 0
	if p.idx == len(p.c.Chunks) {
		p.err = io.EOF
		if p.h != nil {
			if subtle.ConstantTimeCompare(p.h.Sum(nil), p.c.SHA256) != 1 {
				p.err = fmt.Errorf("component %q: payload sha256 mismatch: %w", p.c.Name, ErrCorruptChunk)
				p.r.err = p.err
			}
		}
		return p.err
	}
	it := p.r.get()
	if it.err == nil && (it.end || it.comp != p.ci || it.idx != p.idx) {
		it.err = fmt.Errorf("component %q chunk %d: internal: out of order: %w", p.c.Name, p.idx, ErrMalformed)
	}
	if it.err != nil {
		p.err = it.err
		p.r.err = it.err
		p.r.Close()
		return p.err
	}
	p.idx++
	p.cur = it
	if p.h != nil {
		p.h.Write(it.data)
	}
	return nil
}

func (p *payload) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if err := p.fill(); err != nil {
		return 0, err
	}
	n := copy(b, p.cur.data[p.off:])
	p.off += n
	return n, nil
}

// WriteTo hands each verified chunk to w without an intermediate copy.
func (p *payload) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		err := p.fill()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		n, err := w.Write(p.cur.data[p.off:])
		total += int64(n)
		p.off += n
		if err != nil {
			return total, err
		}
	}
}
