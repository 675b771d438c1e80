package device

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// flushEvery is how many bytes of a slot write may be dirty before the
// kernel is told to start writing them out.
const flushEvery = 8 << 20

// flushAhead is how many started ranges may be in flight before the writer
// waits for the oldest: the dirty page cache stays near
// flushAhead × flushEvery.
const flushAhead = 4

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

func newFlushWriter(f *os.File, flushed func(off, n int64)) io.WriteCloser {
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
