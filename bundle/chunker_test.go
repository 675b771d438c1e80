package bundle

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
)

func chunks(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	c := NewChunker(bytes.NewReader(data))
	for {
		b, err := c.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(b))
	}
}

func TestGearTable(t *testing.T) {
	// The table decides chunk boundaries, so reproducible builds depend on
	// it: pin entries, and check it is splitmix64 of the seed.
	pinned := map[int]uint64{0: 0xa83724c63abaf5dc, 1: 0x8182b2cdaf6821b9, 255: 0xea72d5d97f1cf326}
	for i, want := range pinned {
		if gear[i] != want {
			t.Errorf("gear[%d] = %#x, want %#x", i, gear[i], want)
		}
	}
	x := uint64(gearSeed) + 0x9e3779b97f4a7c15
	z := (x ^ x>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	if got := z ^ z>>31; got != gear[0] {
		t.Errorf("gear[0] = %#x, want splitmix64(seed) = %#x", gear[0], got)
	}
	seen := map[uint64]bool{}
	for _, v := range gear {
		seen[v] = true
	}
	if len(seen) != 256 {
		t.Errorf("gear table has %d distinct values, want 256", len(seen))
	}
}

func TestChunkBounds(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"random 4 MiB", randBytes("bounds", 4<<20)},
		{"zeros 1 MiB", make([]byte, 1<<20)},
		{"text 1 MiB", textBytes("bounds", 1<<20)},
		{"short", []byte("hello")},
		{"empty", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := chunks(t, tc.data)
			var joined []byte
			for i, c := range cs {
				last := i == len(cs)-1
				if len(c) > MaxChunk || (!last && len(c) < MinChunk) || len(c) == 0 {
					t.Errorf("chunk %d of %d: %d bytes outside [%d, %d]", i, len(cs), len(c), MinChunk, MaxChunk)
				}
				joined = append(joined, c...)
			}
			if !bytes.Equal(joined, tc.data) {
				t.Errorf("chunks do not reassemble the input")
			}
		})
	}
}

func TestChunkAverage(t *testing.T) {
	data := randBytes("average", 16<<20)
	cs := chunks(t, data)
	avg := len(data) / len(cs)
	if avg < 48<<10 || avg > 96<<10 {
		t.Errorf("average chunk %d bytes over %d chunks, want about %d", avg, len(cs), AvgChunk)
	}
}

// TestChunkShift checks the property delta updates rely on: inserting bytes
// near the start changes only the chunks around the edit.
func TestChunkShift(t *testing.T) {
	data := randBytes("shift", 4<<20)
	edited := append(append(bytes.Clone(data[:100000]), []byte("inserted bytes")...), data[100000:]...)
	hashes := func(cs [][]byte) map[[32]byte]bool {
		m := map[[32]byte]bool{}
		for _, c := range cs {
			m[sha256.Sum256(c)] = true
		}
		return m
	}
	before := chunks(t, data)
	after := hashes(chunks(t, edited))
	same := 0
	for h := range hashes(before) {
		if after[h] {
			same++
		}
	}
	if same < len(before)-3 {
		t.Errorf("%d of %d chunks survive a 14-byte insertion, want all but at most 3", same, len(before))
	}
}

func TestChunkerShortReads(t *testing.T) {
	data := randBytes("short reads", 1<<20)
	want := chunks(t, data)
	c := NewChunker(&oneByteReader{data})
	for i := 0; ; i++ {
		b, err := c.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Errorf("%d chunks with short reads, want %d", i, len(want))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) || !bytes.Equal(b, want[i]) {
			t.Fatalf("chunk %d differs with short reads", i)
		}
	}
}

type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 7)], r.b)
	r.b = r.b[n:]
	return n, nil
}

func TestIncompressible(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want bool
	}{
		{"random", randBytes("entropy", 64<<10), true},
		{"text", textBytes("entropy", 64<<10), false},
		{"zeros", make([]byte, 64<<10), false},
		{"short random", randBytes("entropy", 100), false},
		{"random with a zero half", append(randBytes("entropy", 32<<10), make([]byte, 32<<10)...), false},
		{"random, sampled", randBytes("entropy", MaxChunk), true},
		{"text, sampled", textBytes("entropy", MaxChunk), false},
		{"random with a zero half, sampled", append(randBytes("entropy", MaxChunk/2), make([]byte, MaxChunk/2)...), false},
	}
	for _, tc := range tests {
		if got := incompressible(tc.data); got != tc.want {
			t.Errorf("incompressible(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// refCut is the cut rule as docs/bundle-format.md states it, written
// plainly; Cut must agree with it, since boundaries decide delta reuse.
func refCut(d []byte) int {
	if len(d) <= 16384 {
		return len(d)
	}
	n := min(len(d), 262144)
	var fp uint64
	for i := 16384; i < n; i++ {
		fp = (fp << 1) + gear[d[i]]
		if i < min(65536, n) {
			if fp&0xFFFFC00000000000 == 0 {
				return i + 1
			}
		} else if fp&0xFFFC000000000000 == 0 {
			return i + 1
		}
	}
	return n
}

func TestCutMatchesSpec(t *testing.T) {
	for _, data := range [][]byte{
		randBytes("spec cut", 3<<20),
		textBytes("spec cut", 1<<20),
		make([]byte, 600<<10),
		randBytes("spec cut short", 40000),
	} {
		for off, k := 0, 0; off < len(data); k++ {
			got, want := Cut(data[off:]), refCut(data[off:])
			if got != want {
				t.Fatalf("chunk %d at %d: Cut = %d, spec says %d", k, off, got, want)
			}
			off += got
		}
	}
}
