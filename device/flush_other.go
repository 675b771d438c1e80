//go:build !linux

package device

import (
	"io"
	"os"
)

type nopFlush struct{ *os.File }

func (nopFlush) Close() error { return nil }

func newFlushWriter(f *os.File, flushed func(off, n int64)) io.WriteCloser { return nopFlush{f} }

func newFlushWriterMode(f *os.File, flushed func(off, n int64), direct bool) io.WriteCloser {
	return nopFlush{f}
}
