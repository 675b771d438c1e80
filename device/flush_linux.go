package device

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// flushEvery is how many bytes of a slot write may be dirty before the
// kernel is told to start writing them out.
const flushEvery = 8 << 20

// flushWriter starts writeback of each flushEvery bytes as soon as they are
// written (sync_file_range WRITE) and waits for the range before the
// previous one. The medium is kept busy while the pipeline produces the
// rest, the final fsync has little left to do, and the dirty page cache
// stays bounded to about two ranges.
type flushWriter struct {
	f       *os.File
	off     int64 // bytes written
	started int64 // writeback started up to here
	waited  int64 // writeback finished up to here
}

func newFlushWriter(f *os.File) io.Writer { return &flushWriter{f: f} }

func (w *flushWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.off += int64(n)
	if w.off-w.started >= flushEvery {
		fd := int(w.f.Fd())
		if unix.SyncFileRange(fd, w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE) == nil {
			if w.started > w.waited {
				_ = unix.SyncFileRange(fd, w.waited, w.started-w.waited,
					unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
				w.waited = w.started
			}
		}
		w.started = w.off
	}
	return n, err
}
