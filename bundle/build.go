package bundle

import (
	"bufio"
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
}

var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithEncoderCRC(false), // every chunk has a sha256
		zstd.WithSingleSegment(true),
		zstd.WithWindowSize(MaxChunk),
	)
})

// Build writes a signed bundle to w. m describes the bundle and its
// components (name, kind, slot or path, version, compression, depends);
// Build fills in FormatVersion and each component's Size, SHA256 and Chunks
// from payloads[i], the payload of m.Components[i]. The stored chunks are
// spooled to a temporary file, because the manifest that precedes them needs
// their sizes. With Ed25519 keys the output is a pure function of the inputs.
func Build(ctx context.Context, w io.Writer, m *Manifest, payloads []io.Reader, keys []crypto.Signer, opts BuildOptions) error {
	if len(payloads) != len(m.Components) {
		return fmt.Errorf("build bundle: %d payloads for %d components", len(payloads), len(m.Components))
	}
	if len(keys) == 0 {
		return fmt.Errorf("build bundle: no signing key")
	}
	spool, err := os.CreateTemp(opts.TempDir, "apb-spool-*")
	if err != nil {
		return fmt.Errorf("build bundle: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()

	m.FormatVersion = FormatVersion
	sw := bufio.NewWriterSize(spool, 1<<20)
	for i := range m.Components {
		if err := chunkComponent(ctx, &m.Components[i], payloads[i], sw, opts); err != nil {
			return fmt.Errorf("build bundle: component %q: %w", m.Components[i].Name, err)
		}
	}
	if err := sw.Flush(); err != nil {
		return fmt.Errorf("build bundle: %w", err)
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
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("build bundle: %w", err)
	}
	if _, err := io.Copy(w, spool); err != nil {
		return fmt.Errorf("build bundle: write payload: %w", err)
	}
	return nil
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
// several workers, appends the stored chunks to spool in order, and fills in
// c.Size, c.SHA256 and c.Chunks.
func chunkComponent(ctx context.Context, c *Component, r io.Reader, spool io.Writer, opts BuildOptions) error {
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
				if enc != nil {
					z := enc.EncodeAll(j.data, make([]byte, 0, len(j.data)))
					if len(z) < len(j.data) {
						j.stored = z
						zs := sha256.Sum256(z)
						j.chunk.StoredSHA256 = zs[:]
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
				if _, err := spool.Write(j.stored); err != nil {
					werr = err
				}
			}
			b := j.data[:0]
			pool.Put(&b)
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

// Countersign copies the bundle read from r to w with one more signature,
// made by key, over the same manifest. The payload is copied unchanged. It
// checks the bundle's structure, not its existing signatures: verify first
// when that matters.
func Countersign(w io.Writer, r io.Reader, key crypto.Signer) (string, error) {
	lim := Limits{}.withDefaults()
	h, err := readHeader(r, lim)
	if err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	raw, err := readN(r, int64(h.SignedLen), "signed section")
	if err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	s, err := parseSigned(raw, lim)
	if err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	if _, err := unmarshalManifest(s.Manifest, lim); err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	kid, err := s.sign(key)
	if err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	if err := writeHead(w, s); err != nil {
		return "", fmt.Errorf("countersign: %w", err)
	}
	if _, err := io.Copy(w, r); err != nil {
		return "", fmt.Errorf("countersign: copy payload: %w", err)
	}
	return kid, nil
}
