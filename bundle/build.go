package bundle

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// BuildOptions tunes Build.
type BuildOptions struct {
	// TempDir holds the spool file of stored chunks while the manifest is
	// being computed (default os.TempDir()).
	TempDir string
	// Progress, if set, is called with the number of payload bytes consumed
	// since its previous call.
	Progress func(n int64)
	// Workers hashing and compressing chunks in parallel (default GOMAXPROCS).
	Workers int
	// SpoolMemory is how many bytes of stored chunks are kept in memory
	// before spilling to TempDir (default DefaultSpoolMemory).
	SpoolMemory int64
}

// encoder is the shared zstd encoder of Build. It is set up on first use
// inside a function rather than by a package-level initializer, so programs
// that only read bundles (autopatchd) do not link the encoder.
var encoder struct {
	once sync.Once
	enc  *zstd.Encoder
	err  error
}

func zstdEncoder() (*zstd.Encoder, error) {
	encoder.once.Do(func() {
		encoder.enc, encoder.err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithEncoderCRC(false), // every chunk has a sha256
			zstd.WithSingleSegment(true),
			zstd.WithWindowSize(MaxChunk),
		)
	})
	return encoder.enc, encoder.err
}

// Build writes a signed bundle to w. m describes the bundle and its
// components (name, kind, slot or path, version, compression, depends);
// Build fills in FormatVersion and each component's Size, SHA256 and Chunks
// from payloads[i], the payload of m.Components[i]. The manifest precedes
// the payload but needs its chunk table, so Build makes two passes: the
// first chunks, hashes and compresses; the second writes. Chunks stored raw
// are read again from a payload that is an io.ReaderAt and io.Seeker (a
// file, a bytes.Reader), which must then not change during the build; every
// other stored chunk is spooled (BuildOptions.SpoolMemory in memory, the rest
// in a temporary file). With Ed25519 keys the output is a pure function of
// the inputs.
func Build(ctx context.Context, w io.Writer, m *Manifest, payloads []io.Reader, keys []crypto.Signer, opts BuildOptions) error {
	if len(payloads) != len(m.Components) {
		return fmt.Errorf("build bundle: %d payloads for %d components", len(payloads), len(m.Components))
	}
	if len(keys) == 0 {
		return fmt.Errorf("build bundle: no signing key")
	}
	if opts.SpoolMemory <= 0 {
		opts.SpoolMemory = DefaultSpoolMemory
	}
	sp := &spool{dir: opts.TempDir, limit: opts.SpoolMemory}
	defer sp.close()
	var pl plan
	m.FormatVersion = FormatVersion
	readers := make([]io.ReaderAt, len(payloads))
	var stats []fileStat
	for i := range m.Components {
		base := int64(-1)
		if ra, ok := payloads[i].(io.ReaderAt); ok {
			if sk, ok := payloads[i].(io.Seeker); ok {
				if pos, err := sk.Seek(0, io.SeekCurrent); err == nil {
					base, readers[i] = pos, ra
				}
			}
		}
		if f, ok := payloads[i].(*os.File); ok {
			stats = append(stats, statOf(f))
		}
		out := chunkOut{spool: sp, plan: &pl, src: i, base: base}
		if err := chunkComponent(ctx, &m.Components[i], payloads[i], out, opts); err != nil {
			return fmt.Errorf("build bundle: component %q: %w", m.Components[i].Name, err)
		}
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("build bundle: %w", err)
	}
	mb, err := MarshalManifest(m)
	if err != nil {
		return fmt.Errorf("build bundle: %w", err)
	}
	s := &signedSection{Manifest: mb}
	for _, k := range keys {
		if _, err := s.sign(k); err != nil {
			return fmt.Errorf("build bundle: %w", err)
		}
	}
	if err := writeHead(w, s); err != nil {
		return fmt.Errorf("build bundle: %w", err)
	}
	if err := pl.write(w, sp, readers); err != nil {
		return fmt.Errorf("build bundle: write payload: %w", err)
	}
	// A file payload that changed between the passes would give a bundle
	// whose chunks do not match its manifest.
	k := 0
	for i := range payloads {
		if f, ok := payloads[i].(*os.File); ok {
			if statOf(f) != stats[k] {
				return fmt.Errorf("build bundle: component %q: source file changed during the build", m.Components[i].Name)
			}
			k++
		}
	}
	return nil
}

type fileStat struct {
	size  int64
	mtime int64
}

func statOf(f *os.File) fileStat {
	fi, err := f.Stat()
	if err != nil {
		return fileStat{-1, -1}
	}
	return fileStat{fi.Size(), fi.ModTime().UnixNano()}
}

// chunkOut is where chunkComponent puts stored chunks: raw chunks of a
// re-readable payload (base >= 0) only go into the plan, others are spooled.
type chunkOut struct {
	spool *spool
	plan  *plan
	src   int
	base  int64
}

// writeHead writes the fixed header and the signed section.
func writeHead(w io.Writer, s *signedSection) error {
	sb, err := marshalSigned(s)
	if err != nil {
		return err
	}
	if int64(len(sb)) > (Limits{}).signedMax() {
		return fmt.Errorf("signed section of %d bytes: %w", len(sb), ErrTooLarge)
	}
	if _, err := w.Write(header{Version: FormatVersion, SignedLen: uint32(len(sb))}.marshal()); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	if _, err := w.Write(sb); err != nil {
		return fmt.Errorf("write signed section: %w", err)
	}
	return nil
}

// chunkJob is one chunk on its way through the hash/compress workers; done
// is closed when Chunk and stored are set.
type chunkJob struct {
	data   []byte
	stored []byte
	chunk  Chunk
	done   chan struct{}
}

// chunkComponent splits r into chunks, hashes and compresses them on
// several workers, records the stored chunks in out in order, and fills in
// c.Size, c.SHA256 and c.Chunks.
func chunkComponent(ctx context.Context, c *Component, r io.Reader, out chunkOut, opts BuildOptions) error {
	if c.Compression == "" {
		c.Compression = CompressionNone
	}
	var enc *zstd.Encoder
	if c.Compression == CompressionZstd {
		var err error
		if enc, err = zstdEncoder(); err != nil {
			return err
		}
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	jobs := make(chan *chunkJob, workers)
	order := make(chan *chunkJob, 2*workers)
	pool := sync.Pool{New: func() any { b := make([]byte, 0, MaxChunk); return &b }}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				sum := sha256.Sum256(j.data)
				j.chunk.SHA256 = sum[:]
				j.chunk.Length = uint32(len(j.data))
				j.stored = j.data
				if enc != nil && !incompressible(j.data) {
					zb := pool.Get().(*[]byte)
					z := enc.EncodeAll(j.data, (*zb)[:0])
					if len(z) < len(j.data) {
						j.stored = z
						zs := sha256.Sum256(z)
						j.chunk.StoredSHA256 = zs[:]
					} else {
						*zb = z[:0]
						pool.Put(zb)
					}
				}
				j.chunk.StoredLength = uint32(len(j.stored))
				close(j.done)
			}
		}()
	}

	// The writer collects results in order.
	whole := sha256.New()
	var werr error
	var off uint64
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		for j := range order {
			<-j.done
			if werr == nil {
				whole.Write(j.data)
				j.chunk.Offset = off
				off += uint64(j.chunk.Length)
				c.Chunks = append(c.Chunks, j.chunk)
				if out.base >= 0 && j.chunk.StoredSHA256 == nil {
					out.plan.add(out.src, out.base+int64(j.chunk.Offset), int64(j.chunk.Length))
				} else {
					out.plan.add(-1, out.spool.n, int64(len(j.stored)))
					if _, err := out.spool.Write(j.stored); err != nil {
						werr = err
					}
				}
			}
			b := j.data[:0]
			pool.Put(&b)
			if j.chunk.StoredSHA256 != nil {
				z := j.stored[:0]
				pool.Put(&z)
			}
		}
	}()

	c.Chunks = nil
	ch := NewChunker(r)
	var rerr error
	for {
		if err := ctx.Err(); err != nil {
			rerr = err
			break
		}
		data, err := ch.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = fmt.Errorf("read payload: %w", err)
			break
		}
		buf := *pool.Get().(*[]byte)
		j := &chunkJob{data: append(buf[:0], data...), done: make(chan struct{})}
		order <- j
		jobs <- j
		if opts.Progress != nil {
			opts.Progress(int64(len(data)))
		}
	}
	close(jobs)
	close(order)
	wg.Wait()
	<-wdone
	if rerr != nil {
		return rerr
	}
	if werr != nil {
		return fmt.Errorf("spool chunks: %w", werr)
	}
	c.Size = off
	c.SHA256 = whole.Sum(nil)
	if c.Chunks == nil {
		c.Chunks = []Chunk{}
	}
	return nil
}
