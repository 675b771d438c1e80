package bundle

import (
	"errors"
	"io"
)

// Content-defined chunking, in the style of FastCDC (Xia et al., 2016/2020):
// a gear rolling hash over the last 64 bytes, no cut before MinChunk, a
// stricter mask (more one bits) before AvgChunk and a looser one after it so
// that chunk sizes cluster around AvgChunk ("normalised chunking"), and a
// forced cut at MaxChunk. Boundaries depend only on the content, so an
// unchanged region of a new image yields the same chunks as the old image.

// gear is the table of 256 pseudo-random 64-bit values. It is part of the
// format's reproducibility (not of its security): a builder that uses another
// table still produces valid bundles, only with different boundaries. The
// values come from splitmix64 seeded with gearSeed.
var gear = func() (t [256]uint64) {
	x := uint64(gearSeed)
	for i := range t {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		t[i] = z ^ z>>31
	}
	return t
}()

// gearSeed is "APBGEAR1" read as a big-endian integer.
const gearSeed = 0x4150424745415231

// Masks test the top bits of the gear hash, which depend on the last 64
// input bytes. AvgChunk is 2^16: the strict mask has 18 bits, the loose one
// 14 (normalisation level 2).
const (
	maskStrict = uint64(1<<18-1) << (64 - 18)
	maskLoose  = uint64(1<<14-1) << (64 - 14)
)

// Cut returns the length of the first chunk of data: MinChunk ≤ n ≤
// MaxChunk, or len(data) when data is shorter than MinChunk. Pass at least
// MaxChunk bytes unless data is the end of the stream.
func Cut(data []byte) int {
	n := len(data)
	if n <= MinChunk {
		return n
	}
	if n > MaxChunk {
		n = MaxChunk
	}
	normal := min(AvgChunk, n)
	var fp uint64
	for j, v := range data[MinChunk:normal] {
		fp = fp<<1 + gear[v]
		if fp&maskStrict == 0 {
			return MinChunk + j + 1
		}
	}
	for j, v := range data[normal:n] {
		fp = fp<<1 + gear[v]
		if fp&maskLoose == 0 {
			return normal + j + 1
		}
	}
	return n
}

// Chunker splits a stream into content-defined chunks.
type Chunker struct {
	r          io.Reader
	buf        []byte
	start, end int
	eof        bool
}

// NewChunker returns a Chunker reading r. It buffers 2×MaxChunk bytes.
func NewChunker(r io.Reader) *Chunker {
	return &Chunker{r: r, buf: make([]byte, 2*MaxChunk)}
}

// Next returns the next chunk, valid until the following call, or io.EOF
// after the last one.
func (c *Chunker) Next() ([]byte, error) {
	if c.end-c.start < MaxChunk && !c.eof {
		if c.start > 0 {
			c.end = copy(c.buf, c.buf[c.start:c.end])
			c.start = 0
		}
		for c.end < len(c.buf) && !c.eof {
			n, err := c.r.Read(c.buf[c.end:])
			c.end += n
			if errors.Is(err, io.EOF) {
				c.eof = true
			} else if err != nil {
				return nil, err
			}
		}
	}
	if c.start == c.end {
		return nil, io.EOF
	}
	n := Cut(c.buf[c.start:c.end])
	chunk := c.buf[c.start : c.start+n]
	c.start += n
	return chunk, nil
}
