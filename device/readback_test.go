package device

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autopatcher/autopatcher/bundle"
)

// chunkTable cuts data into chunks of the given lengths (the last one
// takes the rest), as a bundle's signed chunk table describes them.
func chunkTable(data []byte, lengths ...int) []bundle.Chunk {
	var cs []bundle.Chunk
	off := 0
	for i := 0; off < len(data); i++ {
		n := len(data) - off
		if i < len(lengths) {
			n = min(lengths[i], n)
		}
		sum := sha256.Sum256(data[off : off+n])
		cs = append(cs, bundle.Chunk{Offset: uint64(off), Length: uint32(n), StoredLength: uint32(n), SHA256: sum[:]})
		off += n
	}
	return cs
}

// readBackFile writes data to a file, feeds the read-back the landed
// ranges as a slot writer would (steps of step bytes, then finish), and
// returns its verdict.
func readBackFile(t *testing.T, data []byte, chunks []bundle.Chunk, step int64, size uint64) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "slot.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rb, err := newReadBacker(context.Background(), path, chunks)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); step > 0 && off+step <= int64(len(data)); off += step {
		rb.flushed(off, step)
	}
	return rb.finish(size)
}

// Chunk boundaries that fall inside pages, ranges that land a page or
// several megabytes at a time, and a tail that is not a whole page: the
// read-back accepts what was written and names the first chunk that
// differs, wherever the changed byte lies.
func TestReadBackChunks(t *testing.T) {
	const size = 3<<20 + 1234
	data := randomBytes(41, size)
	// Chunk lengths that are not multiples of a page, so neighbours share
	// pages; the largest is bundle.MaxChunk.
	var lengths []int
	for i := 0; len(lengths) < 64; i++ {
		lengths = append(lengths, []int{bundle.MinChunk + 1, 65537, bundle.MaxChunk, 4095, 70001}[i%5])
	}
	chunks := chunkTable(data, lengths...)
	chunkAt := func(off int64) int {
		for i, c := range chunks {
			if uint64(off) < c.Offset+uint64(c.Length) {
				return i
			}
		}
		return -1
	}
	for _, step := range []int64{0, directAlign, 1 << 20, 3 << 20} {
		t.Run(fmt.Sprintf("step %d", step), func(t *testing.T) {
			if err := readBackFile(t, data, chunks, step, size); err != nil {
				t.Fatalf("read-back of what was written: %v", err)
			}
			// A byte changed at the start, in a page two chunks share, in
			// the last whole page, and in the tail.
			shared := int64(chunks[3].Offset) + 1 // chunk 3 starts mid-page
			for _, at := range []int64{0, shared, shared - 2, size - 1300, size - 1} {
				bad := append([]byte(nil), data...)
				bad[at] ^= 0x40
				err := readBackFile(t, bad, chunks, step, size)
				if !errors.Is(err, ErrVerify) {
					t.Fatalf("byte %d changed: read-back = %v, want ErrVerify", at, err)
				}
				if want := fmt.Sprintf("chunk %d (", chunkAt(at)); !strings.Contains(err.Error(), want) {
					t.Errorf("byte %d changed: %v, want it to name %q", at, err, want)
				}
			}
		})
	}
}

// Two bad chunks in batches hashed at once: the error names the first,
// however the hashing of the batches interleaves (tried a number of
// times, since the interleaving varies).
func TestReadBackFirstBadChunk(t *testing.T) {
	data := randomBytes(42, 2<<20)
	chunks := chunkTable(data, repeat(64<<10, 32)...)
	bad := append([]byte(nil), data...)
	bad[1<<20+512<<10] ^= 1 // chunk 24, in the batch after chunk 16's
	bad[1<<20+7] ^= 1       // chunk 16
	for range 20 {
		err := readBackFile(t, bad, chunks, 0, uint64(len(data)))
		if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "chunk 16 (") {
			t.Fatalf("read-back = %v, want ErrVerify naming chunk 16", err)
		}
	}
}

// A chunk table that does not cover what was written, or covers more
// than the file holds, is an error, not a pass.
func TestReadBackCoverage(t *testing.T) {
	data := randomBytes(43, 1<<20)
	chunks := chunkTable(data, repeat(64<<10, 16)...)
	cases := []struct {
		name   string
		chunks []bundle.Chunk
		size   uint64
		want   error
	}{
		{"table short of the size", chunks[:15], uint64(len(data)), ErrShortPayload},
		{"size short of the table", chunks, uint64(len(data)) - 1, ErrShortPayload},
		{"no table", nil, uint64(len(data)), ErrShortPayload},
		{"file short of the table", append(chunks[:16:16], bundle.Chunk{Offset: 1 << 20, Length: 100, SHA256: make([]byte, 32)}), 1<<20 + 100, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := readBackFile(t, data, c.chunks, 0, c.size)
			if err == nil {
				t.Fatal("read-back passed")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("read-back = %v, want %v", err, c.want)
			}
		})
	}
}

// abort stops a read-back under way, and finish is never needed after it.
func TestReadBackAbort(t *testing.T) {
	data := randomBytes(44, 2<<20)
	path := filepath.Join(t.TempDir(), "slot.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rb, err := newReadBacker(context.Background(), path, chunkTable(data, repeat(64<<10, 32)...))
	if err != nil {
		t.Fatal(err)
	}
	rb.flushed(0, 1<<20)
	rb.abort() // returns once its goroutines have ended
	if !rb.failed() {
		t.Error("an aborted read-back reports no failure")
	}
}

func repeat(n, times int) []int {
	s := make([]int, times)
	for i := range s {
		s[i] = n
	}
	return s
}
