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
// staging buffers of directBuf bytes, and a second goroutine writes each
// full one straight from it to the medium (no copy into the page cache, no
// writeback, no dirty pages for the final fsync) while the next is filled.
const (
	directBuf   = 512 << 10
	directBufs  = 2
	directAlign = 4096 // O_DIRECT offset, length and address alignment
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
// plus writeback) and hands it to the writing goroutine when full; at
// most directBufs buffers exist. Close writes the unaligned tail through
// the ordinary handle f, whose fsync then covers everything.
type directWriter struct {
	f, d    *os.File
	flushed func(off, n int64)
	cur     []byte // staging buffer being filled
	n       int    // bytes in cur
	off     int64  // file offset of cur[0]
	free    chan []byte
	full    chan dblock
	done    chan struct{}
	release []func()

	pending sync.WaitGroup // buffers handed to the goroutine, not yet written

	mu  sync.Mutex
	err error // first write error of the goroutine
}

type dblock struct {
	b   []byte
	off int64
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
		free: make(chan []byte, directBufs), full: make(chan dblock, directBufs), done: make(chan struct{})}
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
	go w.run()
	return w, nil
}

func (w *directWriter) run() {
	defer close(w.done)
	for blk := range w.full {
		if w.failed() == nil {
			if _, err := w.d.WriteAt(blk.b, blk.off); err != nil {
				w.fail(fmt.Errorf("write slot at %d: %w", blk.off, err))
			} else if w.flushed != nil {
				w.flushed(blk.off, int64(len(blk.b)))
			}
		}
		w.free <- blk.b[:cap(blk.b)]
		w.pending.Done()
	}
}

func (w *directWriter) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

func (w *directWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *directWriter) Write(b []byte) (int, error) {
	if err := w.failed(); err != nil {
		return 0, err
	}
	total := len(b)
	if len(b) >= 2*directAlign && w.inPlace(b) {
		if err := w.writeInPlace(b); err != nil {
			w.fail(err)
			return 0, err
		}
		return total, nil
	}
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

// queue hands the full staging buffer to the writing goroutine.
func (w *directWriter) queue() {
	w.pending.Add(1)
	w.full <- dblock{w.cur[:w.n], w.off}
	w.off += int64(w.n)
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

// writeInPlace writes b without copying its whole pages: the staging
// buffer is completed up to the next page boundary with b's head, and
// written together with b's whole pages in one pwritev (after anything
// queued before); b's tail starts the staging buffer again.
func (w *directWriter) writeInPlace(b []byte) error {
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
	w.pending.Wait() // the goroutine's writes come first, for flushed's order
	if err := w.failed(); err != nil {
		return err
	}
	iov := [][]byte{b[:mid]}
	if w.n > 0 {
		iov = [][]byte{w.cur[:w.n], b[:mid]}
	}
	n := w.n + mid
	for done := 0; done < n; {
		m, err := unix.Pwritev(int(w.d.Fd()), iov, w.off+int64(done))
		if err != nil {
			return fmt.Errorf("write slot at %d: %w", w.off+int64(done), err)
		}
		if m == 0 {
			return fmt.Errorf("write slot at %d: %w", w.off+int64(done), io.ErrShortWrite)
		}
		done += m
		iov = advance(iov, m)
	}
	if w.flushed != nil && n > 0 {
		w.flushed(w.off, int64(n))
	}
	w.off += int64(n)
	w.n = copy(w.cur, b[mid:])
	return nil
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
	close(w.full)
	<-w.done
	err := w.failed()
	if err == nil && w.n > 0 {
		if a := w.n &^ (directAlign - 1); a > 0 {
			if _, werr := w.d.WriteAt(w.cur[:a], w.off); werr != nil {
				err = fmt.Errorf("write slot at %d: %w", w.off, werr)
			} else if w.flushed != nil {
				w.flushed(w.off, int64(a))
			}
			w.off += int64(a)
			w.cur, w.n = w.cur[a:w.n], w.n-a
		}
		if err == nil && w.n > 0 {
			if _, werr := w.f.WriteAt(w.cur[:w.n], w.off); werr != nil {
				err = fmt.Errorf("write slot at %d: %w", w.off, werr)
			}
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
