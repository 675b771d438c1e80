package device

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// TestDirectWriterLayouts writes the same bytes through the slot writer
// in pieces of every kind: copied (misplaced in memory), written in place
// (address ≡ file offset modulo a page), pieces smaller than a page and
// a ragged tail. The file must hold exactly the bytes, and flushed must
// report back-to-back ranges from 0.
func TestDirectWriterLayouts(t *testing.T) {
	const size = 3*directBuf + 3*directAlign + 123
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(data)
	// src holds data at an address ≡ file offset (mod directAlign).
	raw := make([]byte, size+2*directAlign)
	pad := (directAlign - int(uintptr(unsafe.Pointer(&raw[0])))%directAlign) % directAlign
	src := raw[pad : pad+size]
	copy(src, data)
	tests := []struct {
		name   string
		pieces []int // lengths; the rest in one piece
		moved  bool  // hand the writer copies at other addresses
	}{
		{"in place, big", []int{size}, false},
		{"in place, ragged", []int{5000, 70000, 1, 9000, directBuf, 4096, 300000, 2*directBuf - 10}, false},
		{"copied", []int{5000, 70000, 1, 9000, directBuf}, true},
		{"mixed", []int{4096 * 3, 77, directBuf - 77, 100}, false},
		{"small", []int{100, 200, 300}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
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
			off := 0
			write := func(n int) {
				p := src[off : off+n]
				if tc.moved && n > 0 {
					p = append([]byte{0}, p...)[1:]
				}
				if m, err := w.Write(p); m != n || err != nil {
					t.Fatalf("Write(%d bytes at %d) = %d, %v", n, off, m, err)
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
