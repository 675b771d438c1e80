package device

import (
	"context"
	"crypto"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
)

const downloadBenchSize = 64 << 20

// BenchmarkDownload measures the device side of a chunked download of a
// 64 MiB image, without the network: every chunk verified against the
// signed table, written at its offset into the slot, marked done (fsync and
// bitmap every 64 chunks), then Finish (whole-image read-back). It reports
// MiB/s and the ratio to min(sha256 MiB/s, fsync'd sequential write MiB/s)
// measured in the same run.
func BenchmarkDownload(b *testing.B) {
	ctx := context.Background()
	r := newRig(b)
	path := filepath.Join(r.dir, "dl.apb")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	m := &bundle.Manifest{Name: "os", Version: "2.0.0", SecurityVersion: 1, Compatible: []string{hwID},
		Created: r.now.Unix(), Severity: bundle.SeverityNormal,
		Components: []bundle.Component{{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: "2.0.0", Compression: bundle.CompressionNone}}}
	img := make([]byte, downloadBenchSize)
	rand.NewChaCha8([32]byte{9}).Read(img)
	if err := bundle.Build(ctx, f, m, []io.Reader{bytesReader(img)}, []crypto.Signer{r.key}, bundle.BuildOptions{TempDir: r.dir}); err != nil {
		b.Fatal(err)
	}
	f.Close()
	fd := newFeeder(b, path, r.trust)

	var rate, shaRate, writeRate float64
	for range 2 {
		shaRate = max(shaRate, refSHA256(img))
		writeRate = max(writeRate, refWrite(b, filepath.Join(r.dir, "ref.img"), img))
		os.Remove(filepath.Join(r.dir, "rootfs-b.img"))
		os.RemoveAll(r.cfg.DataDir)
		os.MkdirAll(r.cfg.DataDir, 0o700)
		start := time.Now()
		d, err := r.engine().Prepare(ctx, fd.signed, DownloadOptions{NoAdvance: true})
		if err != nil {
			b.Fatal(err)
		}
		fd.feed(d, -1)
		if out, err := d.Finish(ctx); err != nil || out.Status != StatusWritten {
			b.Fatalf("Finish = %s, %v", out.Status, err)
		}
		rate = max(rate, mibOf(downloadBenchSize)/time.Since(start).Seconds())
	}
	limit := min(shaRate, writeRate)
	b.ReportMetric(rate, "download-install-MiB/s")
	b.ReportMetric(rate/limit, "ratio")
	b.ReportMetric(shaRate, "sha256-MiB/s")
	b.ReportMetric(writeRate, "write-MiB/s")
}

func mibOf(n int) float64 { return float64(n) / (1 << 20) }

type byteReader struct {
	b []byte
}

func bytesReader(b []byte) io.Reader { return &byteReader{b} }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// refSHA256 is the CPU's hashing rate over buf.
func refSHA256(buf []byte) float64 {
	start := time.Now()
	sha256.Sum256(buf)
	return mibOf(len(buf)) / time.Since(start).Seconds()
}

// refWrite writes buf sequentially in 1 MiB blocks and fsyncs: the
// storage's rate on the file system of the slots.
func refWrite(b *testing.B, path string, buf []byte) float64 {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(path)
	defer f.Close()
	start := time.Now()
	for off := 0; off < len(buf); off += 1 << 20 {
		if _, err := f.Write(buf[off:min(off+1<<20, len(buf))]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return mibOf(len(buf)) / time.Since(start).Seconds()
}
