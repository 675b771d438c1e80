package bundle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

const benchSize = 256 << 20

// benchData is 256 MiB of pseudo-random (incompressible) bytes.
func benchData(b *testing.B) []byte {
	b.Helper()
	data := make([]byte, benchSize)
	rand.NewChaCha8([32]byte{'b', 'e', 'n', 'c', 'h'}).Read(data)
	return data
}

// benchRounds: the benchmark alternates the reference and the measured
// operation this many times and keeps the best time of each, so that load
// from other processes skews neither side of the ratio.
const benchRounds = 5

// sha256Time times single-stream SHA-256 over data: the physical reference
// every verifier must pay at least once per byte.
func sha256Time(data []byte) time.Duration {
	start := time.Now()
	h := sha256.New()
	for off := 0; off < len(data); off += 1 << 20 {
		h.Write(data[off:min(off+1<<20, len(data))])
	}
	h.Sum(nil)
	return time.Since(start)
}

// compare runs ref and op alternately benchRounds times per b.N iteration
// and reports op's best rate, ref's best rate and their ratio.
func compare(b *testing.B, n int, ref func() time.Duration, op func()) {
	b.ResetTimer()
	bestRef, bestOp := time.Duration(1<<62), time.Duration(1<<62)
	for range b.N {
		for range benchRounds {
			bestRef = min(bestRef, ref())
			start := time.Now()
			op()
			bestOp = min(bestOp, time.Since(start))
		}
	}
	rate, refRate := mibps(n, bestOp), mibps(n, bestRef)
	b.ReportMetric(rate, "MiB/s")
	b.ReportMetric(refRate, "sha256-MiB/s")
	b.ReportMetric(rate/refRate, "ratio")
}

func mibps(n int, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

func benchKey() ed25519.PrivateKey {
	seed := [32]byte{'k'}
	return ed25519.NewKeyFromSeed(seed[:])
}

func benchManifest(comp Compression) *Manifest {
	return &Manifest{
		Name: "bench", Version: "1.0.0", Severity: SeverityNormal, Compatible: []string{"bench"},
		Components: []Component{{Name: "rootfs", Kind: KindImage, Slot: "rootfs", Version: "1.0.0", Compression: comp}},
	}
}

// BenchmarkVerify opens and fully verifies a 256 MiB random-data bundle held
// in memory, and reports the best rate of benchRounds as a ratio to the best
// single-stream SHA-256 rate measured alternately in the same run. "chunks"
// is the default reader (every chunk verified, each byte hashed once);
// "payload-hash" also checks each component's whole SHA-256, as mkbundle
// verify does.
func BenchmarkVerify(b *testing.B) {
	data := benchData(b)
	key := benchKey()
	var apb bytes.Buffer
	apb.Grow(benchSize + 1<<20)
	if err := Build(context.Background(), &apb, benchManifest(CompressionZstd), []io.Reader{bytes.NewReader(data)}, []crypto.Signer{key}, BuildOptions{TempDir: b.TempDir()}); err != nil {
		b.Fatal(err)
	}
	pub, _ := NewPublicKey(key.Public())
	trust := &Trust{Keys: []PublicKey{pub}}
	for _, bc := range []struct {
		name string
		opts []Option
	}{
		{"chunks", nil},
		{"payload-hash", []Option{WithPayloadHash(true)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			compare(b, benchSize, func() time.Duration { return sha256Time(data) }, func() {
				r, err := Open(bytes.NewReader(apb.Bytes()), trust, bc.opts...)
				if err != nil {
					b.Fatal(err)
				}
				for {
					_, p, err := r.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, p); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkBuild builds a signed bundle from 256 MiB of random data with
// zstd (chunks that do not shrink are stored raw) and reports the rate as a
// ratio to the same run's single-stream SHA-256 rate.
func BenchmarkBuild(b *testing.B) {
	data := benchData(b)
	key := benchKey()
	dir := b.TempDir()
	compare(b, benchSize, func() time.Duration { return sha256Time(data) }, func() {
		if err := Build(context.Background(), io.Discard, benchManifest(CompressionZstd), []io.Reader{bytes.NewReader(data)}, []crypto.Signer{key}, BuildOptions{TempDir: dir}); err != nil {
			b.Fatal(err)
		}
	})
}
