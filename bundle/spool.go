package bundle

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// DefaultSpoolMemory is how many bytes of stored chunks Build keeps in memory
// before it spills them to a temporary file.
const DefaultSpoolMemory = 32 << 20

// spool holds the stored chunks a builder cannot re-read from its payloads
// (compressed chunks, and every chunk of a payload that is not an
// io.ReaderAt): in memory up to limit bytes, then in a temporary file.
type spool struct {
	dir   string
	limit int64
	mem   bytes.Buffer
	f     *os.File
	n     int64
}

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && s.n+int64(len(p)) > s.limit {
		f, err := os.CreateTemp(s.dir, "apb-spool-*")
		if err != nil {
			return 0, err
		}
		os.Remove(f.Name()) // unlinked: the space is freed when f is closed
		s.f = f
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			return 0, err
		}
		s.mem = bytes.Buffer{}
	}
	var n int
	var err error
	if s.f != nil {
		n, err = s.f.Write(p)
	} else {
		n, err = s.mem.Write(p)
	}
	s.n += int64(n)
	return n, err
}

func (s *spool) readerAt() io.ReaderAt {
	if s.f != nil {
		return s.f
	}
	return bytes.NewReader(s.mem.Bytes())
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
	}
}

// segment is a run of stored bytes of the output: from payload src at
// offset off, or from the spool when src is -1.
type segment struct {
	src    int
	off, n int64
}

// plan lists the output's payload segments in order.
type plan []segment

func (p *plan) add(src int, off, n int64) {
	if k := len(*p); k > 0 {
		last := &(*p)[k-1]
		if last.src == src && last.off+last.n == off {
			last.n += n
			return
		}
	}
	*p = append(*p, segment{src, off, n})
}

// write copies the planned segments to w.
func (p plan) write(w io.Writer, sp *spool, payloads []io.ReaderAt) error {
	buf := make([]byte, 1<<20)
	spr := sp.readerAt()
	for _, s := range p {
		src := spr
		if s.src >= 0 {
			src = payloads[s.src]
		}
		n, err := io.CopyBuffer(w, io.NewSectionReader(src, s.off, s.n), buf)
		if err == nil && n != s.n {
			err = fmt.Errorf("payload changed during the build: %d of %d bytes at offset %d: %w", n, s.n, s.off, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
