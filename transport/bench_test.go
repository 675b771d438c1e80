package transport_test

import (
	"bytes"
	"context"
	"crypto"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/transport"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

// memSink is an in-memory io.WriterAt.
type memSink []byte

func (m memSink) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// BenchmarkTransfer fetches a 64 MiB component through the embedded broker
// on loopback and compares it with a plain TCP copy of the same stored bytes
// in the same run.
func BenchmarkTransfer(b *testing.B) {
	const size = 64 << 20
	img := make([]byte, size)
	rand.NewChaCha8([32]byte{5}).Read(img)
	apb := build(b, "1.0.0", img)

	o, m, f := benchRig(b, "o1", apb)
	digest := o.Digest
	ctx := context.Background()
	comp := &m.Components[0]
	stored := comp.StoredSize()
	out := make(memSink, size)

	b.SetBytes(stored)
	b.ResetTimer()
	var mqttTime time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		err := f.Fetch(ctx, transport.Request{Offer: "o1", Digest: digest, Comp: comp, Sink: out, Done: &transporttest.Progress{}})
		mqttTime += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if !bytes.Equal(out, img) {
		b.Fatal("transferred image differs")
	}
	tcpTime := tcpCopy(b, apb[len(apb)-int(stored):], b.N)
	mib := float64(stored) * float64(b.N) / (1 << 20)
	mqtt := mib / mqttTime.Seconds()
	tcp := mib / tcpTime.Seconds()
	b.ReportMetric(mqtt, "MiB/s")
	b.ReportMetric(tcp, "tcp-MiB/s")
	b.ReportMetric(mqtt/tcp, "ratio")
}

// benchRig serves apb as offerID to device "dev" through the embedded broker
// and returns the offer, its manifest and the device's fetcher.
func benchRig(b *testing.B, offerID string, apb []byte) (*transport.Offer, *bundle.Manifest, *transport.Fetcher) {
	r := newRig(b)
	o, m := r.offer("dev", offerID, apb)
	r.broker.Add("dev", []byte("dev"))
	f, err := transport.NewFetcher(dial(b, r.broker.URL(), "dev", []byte("dev")), "dev", transport.FetchOptions{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	return o, m, f
}

// tcpCopy sends payload n times over a loopback TCP connection and returns
// the time taken.
func tcpCopy(b *testing.B, payload []byte, n int) time.Duration {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	start := time.Now()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := c.Write(payload); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	k := <-got
	d := time.Since(start)
	if k != int64(len(payload)*n) {
		b.Fatalf("tcp copy moved %d bytes, want %d", k, len(payload)*n)
	}
	return d
}

// BenchmarkDelta fetches a 256 MiB image of which 1% changed (64 scattered
// regions of 40 KiB) while the device holds the previous image, and reports
// the bytes that crossed the network as a fraction of the full component.
func BenchmarkDelta(b *testing.B) {
	const size = 256 << 20
	img1 := image(11, size)
	img2 := bytes.Clone(img1)
	rng := rand.New(rand.NewPCG(12, 0))
	const regions, region = 64, 40 << 10
	for r := 0; r < regions; r++ {
		off := r*(size/regions) + rng.IntN(size/regions-region)
		for i := off; i < off+region; i++ {
			img2[i] = byte(rng.Uint32())
		}
	}
	// The device's copy of the first image: only its chunk table is needed.
	m1 := manifestOf(b, img1)
	local := transporttest.NewLocal(&m1.Components[0], img1)
	apb2 := build(b, "2.0.0", img2)

	o, m2, f := benchRig(b, "o2", apb2)
	digest := o.Digest
	ctx := context.Background()
	comp := &m2.Components[0]
	out := make(memSink, size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		err := f.Fetch(ctx, transport.Request{Offer: "o2", Digest: digest, Comp: comp, Sink: out, Done: &transporttest.Progress{}, Local: local})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if !bytes.Equal(out, img2) {
		b.Fatal("transferred image differs")
	}
	wire := float64(f.Stats.Bytes.Load()) / float64(b.N)
	b.ReportMetric(wire/float64(comp.StoredSize()), "wire-fraction")
	b.ReportMetric(wire/float64(size), "wire-fraction-of-raw")
	b.ReportMetric(float64(regions*region)/float64(size), "changed-fraction")
	b.ReportMetric(wire/(1<<20), "wire-MiB")
}

// manifestOf chunks img as the bundle builder does and returns the manifest,
// without keeping the bundle.
func manifestOf(b *testing.B, img []byte) *bundle.Manifest {
	m := &bundle.Manifest{Name: "app", Version: "1.0.0", Severity: bundle.SeverityNormal, Compatible: []string{"sim"},
		Components: []bundle.Component{{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: "1.0.0", Compression: bundle.CompressionZstd}}}
	if err := bundle.Build(context.Background(), io.Discard, m, []io.Reader{bytes.NewReader(img)}, []crypto.Signer{vendorKey}, bundle.BuildOptions{TempDir: b.TempDir()}); err != nil {
		b.Fatal(err)
	}
	return m
}
