package device

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"runtime"
	"testing"

	"github.com/autopatcher/autopatcher/bundle"
)

// holdingWriter is an ownedWriter that keeps up to hold segments before
// it lets the oldest go, as a slot writer with writes queued does. It
// checks that nothing changes a segment while it holds it (the pipeline
// must not reuse a buffer before done) and collects what it was given.
type holdingWriter struct {
	t     *testing.T
	hold  int
	held  []held
	out   bytes.Buffer
	calls int
	dones int
}

type held struct {
	b    []byte
	sum  [32]byte
	done func()
}

func (w *holdingWriter) WriteOwned(b []byte, done func()) error {
	w.calls++
	w.out.Write(b)
	w.held = append(w.held, held{b, sha256.Sum256(b), done})
	for len(w.held) > w.hold {
		w.release()
	}
	return nil
}

func (w *holdingWriter) Write(b []byte) (int, error) {
	w.out.Write(b)
	return len(b), nil
}

func (w *holdingWriter) release() {
	h := w.held[0]
	w.held = w.held[1:]
	if sha256.Sum256(h.b) != h.sum {
		w.t.Errorf("a held segment of %d bytes changed before its done was called", len(h.b))
	}
	h.done()
	w.dones++
}

// TestChunkStreamOwned streams components through an ownedWriter that
// holds segments for a while: raw chunks (handed over in place) and zstd
// chunks (decompressed copies), more batches than the pipeline has
// buffers. The bytes must come out in order and unchanged, held segments
// must stay untouched until released, and every done must be called.
func TestChunkStreamOwned(t *testing.T) {
	r := newRig(t)
	payload := randomBytes(5, 3*pipelineDepth*batchBytes+12345)
	text := bytes.Repeat([]byte("a compressible line of the root filesystem\n"), 60000)
	for _, tc := range []struct {
		name string
		c    comp
		hold int
	}{
		{"raw, no hold", comp{bundle.Component{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: "2.0.0", Compression: bundle.CompressionNone}, payload}, 0},
		{"raw, held", comp{bundle.Component{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: "2.0.0", Compression: bundle.CompressionNone}, payload}, pipelineDepth - 1},
		{"zstd, held", image("rootfs", "2.0.0", text), pipelineDepth - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := r.build(spec{version: "2.0.0", comps: []comp{tc.c}})
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			trust, err := r.engine().trust()
			if err != nil {
				t.Fatal(err)
			}
			br, err := bundle.Open(f, trust, bundle.WithReadAhead(0))
			if err != nil {
				t.Fatal(err)
			}
			m := br.Manifest()
			layout := bundle.Layout(m, br.DataOffset())
			s := newChunkStream(context.Background(), f, &m.Components[0], layout[0])
			w := &holdingWriter{t: t, hold: tc.hold}
			n, err := s.WriteTo(w)
			for len(w.held) > 0 {
				w.release()
			}
			s.Close()
			if err != nil {
				t.Fatalf("WriteTo = %v", err)
			}
			if n != int64(len(tc.c.payload)) || !bytes.Equal(w.out.Bytes(), tc.c.payload) {
				t.Errorf("WriteTo wrote %d bytes (equal %v), want the %d-byte payload", n, bytes.Equal(w.out.Bytes(), tc.c.payload), len(tc.c.payload))
			}
			if w.calls == 0 || w.calls != w.dones {
				t.Errorf("%d WriteOwned calls, %d done calls", w.calls, w.dones)
			}
		})
	}
}

// TestSpareProcRestored: an image install raises GOMAXPROCS only while
// it writes, and overlapping writes restore it once the last one ends.
func TestSpareProcRestored(t *testing.T) {
	r := newRig(t)
	before := runtime.GOMAXPROCS(0)
	path := r.build(spec{version: "2.0.0", comps: []comp{image("rootfs", "2.0.0", randomBytes(3, 1<<20))}})
	if out, err := r.install(r.engine(), path, InstallOptions{NoAdvance: true}); err != nil || out.Status != StatusWritten {
		t.Fatalf("Install = %+v, %v", out, err)
	}
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS after the install = %d, want %d as before", got, before)
	}
	// Overlapping writes share one spare P, ended in any order.
	first := spareProc()
	if got := runtime.GOMAXPROCS(0); got != before+1 {
		t.Errorf("GOMAXPROCS during a write = %d, want %d", got, before+1)
	}
	second := spareProc()
	if got := runtime.GOMAXPROCS(0); got != before+1 {
		t.Errorf("GOMAXPROCS during two writes = %d, want %d", got, before+1)
	}
	first()
	first() // a second call changes nothing
	if got := runtime.GOMAXPROCS(0); got != before+1 {
		t.Errorf("GOMAXPROCS with one write left = %d, want %d", got, before+1)
	}
	second()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS after the writes = %d, want %d", got, before)
	}
}
