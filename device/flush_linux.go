package device

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// flushEvery is how many bytes of a buffered slot write may be dirty
// before the kernel is told to start writing them out.
const flushEvery = 8 << 20

// flushAhead is how many started ranges may be in flight before the
// buffered writer waits for the oldest: the dirty page cache stays near
// flushAhead × flushEvery.
const flushAhead = 4

// Direct (O_DIRECT) slot writes: the payload is gathered into page-aligned
// staging buffers of directBuf bytes, or written straight from the
// caller's buffer where it lies page-aligned (WriteOwned), by a writing
// goroutine that has the next writes queued when one completes (no copy
// into the page cache, no writeback, no dirty pages for the final fsync).
// One goroutine, not several: two O_DIRECT writes at once were slower on
// ext4, and one keeps the queue in file order, which lets it join
// queued writes into one pwritev.
const (
	directBuf      = 512 << 10
	directBufs     = 4       // staging buffers: one filling, the rest held by queued writes
	directMaxWrite = 4 << 20 // bytes per pwritev at most
	directMaxIov   = 64      // buffers per pwritev at most (IOV_MAX is 1024)
)

// newFlushWriter returns the writer of an image slot opened as f. It
// writes with O_DIRECT where the file system allows it (directWriter),
// else through the page cache with early writeback (flushWriter). flushed,
// if set, is called in order with each range once it reached the medium.
// Close must be called and its error checked; if Close fails, f is closed
// too, so a caller that only checks f.Truncate/f.Sync still sees the
// failure.
func newFlushWriter(f *os.File, flushed func(off, n int64)) io.WriteCloser {
	return newFlushWriterMode(f, flushed, true)
}

// newFlushWriterMode is newFlushWriter with O_DIRECT allowed or not.
func newFlushWriterMode(f *os.File, flushed func(off, n int64), direct bool) io.WriteCloser {
	if direct {
		if w, err := newDirectWriter(f, flushed); err == nil {
			return w
		}
	}
	return newBufferedFlushWriter(f, flushed)
}

// flushWriter starts writeback of each flushEvery bytes as soon as they
// are written (sync_file_range WRITE, which does not wait), and a second
// goroutine waits for each range to reach the medium. The medium is busy
// while the pipeline produces the rest, the writer only blocks when
// flushAhead ranges are still in flight, and the final fsync has little
// left to do.
type flushWriter struct {
	f       *os.File
	flushed func(off, n int64) // called in order as ranges reach the medium; may be nil
	off     int64              // bytes written
	started int64              // writeback started up to here
	ranges  chan [2]int64
	done    chan struct{}
}

func newBufferedFlushWriter(f *os.File, flushed func(off, n int64)) *flushWriter {
	w := &flushWriter{f: f, flushed: flushed, ranges: make(chan [2]int64, flushAhead), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for r := range w.ranges {
			err := unix.SyncFileRange(int(f.Fd()), r[0], r[1],
				unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
			if err == nil && w.flushed != nil {
				w.flushed(r[0], r[1])
			}
		}
	}()
	return w
}

func (w *flushWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.off += int64(n)
	if w.off-w.started >= flushEvery {
		r := [2]int64{w.started, w.off - w.started}
		if unix.SyncFileRange(int(w.f.Fd()), r[0], r[1], unix.SYNC_FILE_RANGE_WRITE) == nil {
			w.ranges <- r
		}
		w.started = w.off
	}
	return n, err
}

// Close stops the waiting goroutine; the caller still fsyncs the file.
func (w *flushWriter) Close() error {
	close(w.ranges)
	<-w.done
	return nil
}

// directWriter writes a slot sequentially from offset 0 through an
// O_DIRECT handle of the same file. Write copies into the current staging
// buffer (a memcpy, far cheaper than the kernel's copy into the page cache
// plus writeback) and queues it when full; WriteOwned queues a caller's
// buffer that lies in memory as in the file without copying its whole
// pages. One goroutine writes the queue, joining what is queued into one
// pwritev; completions are reported to flushed in file order. At most directBufs staging buffers exist. Close writes
// the unaligned tail through the ordinary handle f, whose fsync then
// covers everything.
type directWriter struct {
	f, d    *os.File
	flushed func(off, n int64)
	cur     []byte // staging buffer being filled
	n       int    // bytes in cur
	off     int64  // file offset of cur[0]
	free    chan []byte
	jobs    chan *djob
	wg      sync.WaitGroup // the writing goroutine
	release []func()

	mu  sync.Mutex
	err error // first write error
}

// djob is one queued write: iov at off, then after runs (buffers go back
// to their owners).
type djob struct {
	iov   [][]byte
	off   int64
	n     int64
	after []func()
}

func newDirectWriter(f *os.File, flushed func(off, n int64)) (*directWriter, error) {
	if off, err := f.Seek(0, io.SeekCurrent); err != nil || off != 0 {
		return nil, errors.New("direct write: not at offset 0")
	}
	d, err := os.OpenFile(f.Name(), os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	w := &directWriter{f: f, d: d, flushed: flushed,
		free: make(chan []byte, directBufs), jobs: make(chan *djob, directBufs)}
	for range directBufs {
		b, rel, err := mmapBuf(directBuf)
		if err != nil {
			w.freeBufs()
			d.Close()
			return nil, err
		}
		w.release = append(w.release, rel)
		w.free <- b
	}
	w.cur = <-w.free
	w.wg.Add(1)
	go w.run()
	return w, nil
}

func (w *directWriter) run() {
	defer w.wg.Done()
	var batch []*djob
	var iov [][]byte
	for j := range w.jobs {
		// The writes queued behind j go out with it in one pwritev (they
		// are back to back): fewer, larger writes, and the medium is not
		// left idle while this goroutine waits to run between them.
		batch, iov = append(batch[:0], j), append(iov[:0], j.iov...)
		n := j.n
	more:
		for n < directMaxWrite && len(iov) < directMaxIov-2 {
			select {
			case k, ok := <-w.jobs:
				if !ok {
					break more
				}
				batch, iov = append(batch, k), append(iov, k.iov...)
				n += k.n
			default:
				break more
			}
		}
		var err error
		if w.failed() == nil {
			err = w.pwritev(iov, j.off)
		}
		for _, k := range batch {
			for _, fn := range k.after {
				fn()
			}
			w.landedJob(k, err)
		}
	}
}

// pwritev writes all of iov at off.
func (w *directWriter) pwritev(iov [][]byte, off int64) error {
	var n int64
	for _, b := range iov {
		n += int64(len(b))
	}
	for done := int64(0); done < n; {
		m, err := unix.Pwritev(int(w.d.Fd()), iov, off+done)
		if err != nil {
			return fmt.Errorf("write slot at %d: %w", off+done, err)
		}
		if m == 0 {
			return fmt.Errorf("write slot at %d: %w", off+done, io.ErrShortWrite)
		}
		done += int64(m)
		iov = advance(iov, m)
	}
	return nil
}

// landedJob records that j was written (or failed with err) and, while
// every write so far succeeded, reports its range to flushed. Jobs land
// in the order they were queued: one goroutine writes them.
func (w *directWriter) landedJob(j *djob, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && w.err == nil {
		w.err = err
	}
	if w.err == nil && w.flushed != nil && j.n > 0 {
		w.flushed(j.off, j.n)
	}
}

func (w *directWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// submit queues a write of iov at the current offset and advances it.
func (w *directWriter) submit(iov [][]byte, after ...func()) {
	j := &djob{iov: iov, off: w.off, after: after}
	for _, b := range iov {
		j.n += int64(len(b))
	}
	w.off += j.n
	w.jobs <- j
}

func (w *directWriter) Write(b []byte) (int, error) {
	if err := w.failed(); err != nil {
		return 0, err
	}
	total := len(b)
	for len(b) > 0 {
		c := copy(w.cur[w.n:], b)
		w.n += c
		b = b[c:]
		if w.n == len(w.cur) {
			w.queue()
		}
	}
	return total, nil
}

// WriteOwned writes b, which the caller leaves untouched until done is
// called: whole pages of a b that lies in memory as in the file are
// written straight from it, later, by the writing goroutines; anything
// else is copied (see Write) and done is called at once.
func (w *directWriter) WriteOwned(b []byte, done func()) error {
	if len(b) < 2*directAlign || !w.inPlace(b) {
		_, err := w.Write(b)
		done()
		return err
	}
	if err := w.failed(); err != nil {
		done()
		return err
	}
	w.writeInPlace(b, done)
	return nil
}

// queue hands the full staging buffer to the writing goroutines.
func (w *directWriter) queue() {
	buf := w.cur
	w.submit([][]byte{buf[:w.n]}, func() { w.free <- buf[:cap(buf)] })
	w.cur, w.n = <-w.free, 0
}

// inPlace tells whether b lies in memory as its bytes lie in the file
// (address ≡ file offset modulo directAlign): the chunk pipeline reads
// batches of raw chunks that way, so their whole pages can be written
// straight from the batch buffer.
func (w *directWriter) inPlace(b []byte) bool {
	pos := w.off + int64(w.n)
	return (int64(uintptr(unsafe.Pointer(&b[0])))-pos)%directAlign == 0
}

// writeInPlace queues b without copying its whole pages: the staging
// buffer is completed up to the next page boundary with b's head, and
// written together with b's whole pages in one pwritev; b's tail starts
// the next staging buffer. done runs once the write is complete.
func (w *directWriter) writeInPlace(b []byte, done func()) {
	pos := w.off + int64(w.n)
	head := int((directAlign - pos%directAlign) % directAlign)
	if w.n+head >= len(w.cur) { // the page ends the staging buffer: fill and send it
		c := copy(w.cur[w.n:], b)
		w.n += c
		b = b[c:]
		w.queue()
		head = 0
	}
	w.n += copy(w.cur[w.n:], b[:head])
	b = b[head:]
	mid := len(b) &^ (directAlign - 1)
	// The tail is copied before the write is queued: once written, b
	// belongs to its owner again.
	tail := b[mid:]
	if w.n == 0 {
		w.n = copy(w.cur, tail)
		w.submit([][]byte{b[:mid]}, done)
		return
	}
	buf, next := w.cur, <-w.free
	n := copy(next, tail)
	w.submit([][]byte{buf[:w.n], b[:mid]}, done, func() { w.free <- buf[:cap(buf)] })
	w.cur, w.n = next, n
}

// advance drops the first m bytes of iov.
func advance(iov [][]byte, m int) [][]byte {
	for m > 0 && len(iov) > 0 {
		if m < len(iov[0]) {
			iov[0] = iov[0][m:]
			return iov
		}
		m -= len(iov[0])
		iov = iov[1:]
	}
	return iov
}

// Close waits for the queued writes and writes the rest: its aligned part
// directly, the last partial page through f. On failure it closes f.
func (w *directWriter) Close() error {
	if w.jobs == nil {
		return w.failed()
	}
	if err := w.failed(); err == nil && w.n > 0 {
		if a := w.n &^ (directAlign - 1); a > 0 {
			w.submit([][]byte{w.cur[:a]})
			w.cur, w.n = w.cur[a:w.n], w.n-a
		}
	}
	close(w.jobs)
	w.wg.Wait()
	w.jobs = nil
	err := w.failed()
	if err == nil && w.n > 0 {
		if _, werr := w.f.WriteAt(w.cur[:w.n], w.off); werr != nil {
			err = fmt.Errorf("write slot at %d: %w", w.off, werr)
		}
	}
	w.d.Close()
	w.freeBufs()
	if err != nil {
		w.f.Close() // the caller's Truncate/Sync now fail instead of syncing a short slot
	}
	return err
}

func (w *directWriter) freeBufs() {
	for _, rel := range w.release {
		rel()
	}
	w.release = nil
}
