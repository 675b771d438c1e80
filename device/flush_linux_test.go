package device

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"unsafe"
)

// TestDirectWriterLayouts writes the same bytes through the slot writer
// in pieces of every kind: copied (misplaced in memory, or through Write),
// written in place by WriteOwned (address ≡ file offset modulo a page),
// pieces smaller than a page and a ragged tail. The file must hold exactly
// the bytes, flushed must report back-to-back ranges from 0, and each
// WriteOwned's done must run once, after which the writer must not read
// the piece again (done scribbles over it).
func TestDirectWriterLayouts(t *testing.T) {
	const size = 3*directBuf + 3*directAlign + 123
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(data)
	tests := []struct {
		name   string
		pieces []int // lengths; the rest in one piece
		moved  bool  // hand the writer copies at other addresses
		copied bool  // use Write rather than WriteOwned
	}{
		{"in place, big", []int{size}, false, false},
		{"in place, ragged", []int{5000, 70000, 1, 9000, directBuf, 4096, 300000, 2*directBuf - 10}, false, false},
		{"in place, many", []int{8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192}, false, false},
		{"copied", []int{5000, 70000, 1, 9000, directBuf}, true, false},
		{"mixed", []int{4096 * 3, 77, directBuf - 77, 100}, false, false},
		{"small", []int{100, 200, 300}, false, false},
		{"through Write", []int{5000, 70000, 1, 9000, directBuf}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// src holds data at an address ≡ file offset (mod directAlign).
			raw := make([]byte, size+2*directAlign)
			pad := (directAlign - int(uintptr(unsafe.Pointer(&raw[0])))%directAlign) % directAlign
			src := raw[pad : pad+size]
			copy(src, data)
			path := filepath.Join(t.TempDir(), "slot.img")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			var next int64
			ordered := true
			w := newFlushWriter(f, func(off, n int64) {
				if off != next {
					ordered = false
				}
				next = off + n
			})
			ow, ok := w.(ownedWriter)
			if !ok {
				t.Skip("no O_DIRECT here: the buffered writer copies")
			}
			var calls, dones atomic.Int32
			off := 0
			write := func(n int) {
				p := src[off : off+n]
				if tc.moved && n > 0 {
					p = append([]byte{0}, p...)[1:]
				}
				if tc.copied {
					if m, err := w.Write(p); m != n || err != nil {
						t.Fatalf("Write(%d bytes at %d) = %d, %v", n, off, m, err)
					}
				} else {
					calls.Add(1)
					var once atomic.Bool
					err := ow.WriteOwned(p, func() {
						if once.Swap(true) {
							t.Errorf("done of the piece at %d called twice", off)
						}
						dones.Add(1)
						for i := range p {
							p[i] = 0xff // the writer must be done with it
						}
					})
					if err != nil {
						t.Fatalf("WriteOwned(%d bytes at %d) = %v", n, off, err)
					}
				}
				off += n
			}
			for _, n := range tc.pieces {
				write(min(n, size-off))
			}
			write(size - off)
			if err := w.Close(); err != nil {
				t.Fatalf("Close = %v", err)
			}
			if c, d := calls.Load(), dones.Load(); c != d {
				t.Errorf("%d WriteOwned calls, %d done calls after Close", c, d)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("file differs from the data (len %d, want %d)", len(got), len(data))
			}
			if !ordered || next > size {
				t.Errorf("flushed ranges not back to back from 0 (ended at %d)", next)
			}
		})
	}
}
