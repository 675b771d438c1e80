package transport_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/transport"
	"github.com/autopatcher/autopatcher/transport/transporttest"
)

var (
	vendorKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	trust     = func() *bundle.Trust {
		pub, err := bundle.NewPublicKey(vendorKey.Public())
		if err != nil {
			panic(err)
		}
		return &bundle.Trust{Keys: []bundle.PublicKey{pub}}
	}()
)

// image returns n bytes: random with runs of text, so chunks both compress
// and do not.
func image(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := 0; i < n; {
		run := 4096 + rng.IntN(60000)
		end := min(n, i+run)
		if rng.IntN(2) == 0 {
			for j := i; j < end; j++ {
				b[j] = byte(rng.Uint32())
			}
		} else {
			for j := i; j < end; j++ {
				b[j] = "autopatcher fleet "[j%18]
			}
		}
		i = end
	}
	return b
}

// build makes a signed one-component bundle of img.
func build(t testing.TB, version string, img []byte) []byte {
	t.Helper()
	m := &bundle.Manifest{Name: "app", Version: version, Severity: bundle.SeverityNormal, Compatible: []string{"sim"},
		Components: []bundle.Component{{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: version, Compression: bundle.CompressionZstd}}}
	var out bytes.Buffer
	if err := bundle.Build(context.Background(), &out, m, []io.Reader{bytes.NewReader(img)}, []crypto.Signer{vendorKey}, bundle.BuildOptions{TempDir: t.TempDir()}); err != nil {
		t.Fatalf("build bundle: %v", err)
	}
	return out.Bytes()
}

// rig is a broker, a hub serving one store, and helpers to connect devices.
type rig struct {
	t      testing.TB
	broker *transporttest.Broker
	store  *transporttest.Store
	offers *transport.OfferSet
	server *transport.Server
	hub    *transport.Conn
}

func newRig(t testing.TB) *rig {
	b := transporttest.Start(t)
	b.Add(transport.Hub, []byte("hub"))
	r := &rig{t: t, broker: b, store: transporttest.NewStore(), offers: &transport.OfferSet{}}
	r.hub = dial(t, b.URL(), transport.Hub, []byte("hub"))
	r.server = transport.NewServer(r.hub, r.store, r.offers.Offered, transport.ServeOptions{Logger: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.server.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// offer stores apb as offerID for device and returns the offer and manifest.
func (r *rig) offer(device, offerID string, apb []byte) (*transport.Offer, *bundle.Manifest) {
	m, digest, err := r.store.Add(offerID, apb, trust)
	if err != nil {
		r.t.Fatal(err)
	}
	r.offers.Add(device, offerID, time.Time{})
	return &transport.Offer{ID: offerID, Bundle: m.Name, Version: m.Version, Digest: digest}, m
}

func (r *rig) device(id string, window int) (*transport.Conn, *transport.Fetcher) {
	r.broker.Add(id, []byte("pw-"+id))
	c := dial(r.t, r.broker.URL(), id, []byte("pw-"+id))
	f, err := transport.NewFetcher(c, id, transport.FetchOptions{Window: window, Timeout: 300 * time.Millisecond, MaxRetries: 40, Logger: quiet})
	if err != nil {
		r.t.Fatal(err)
	}
	return c, f
}

func sink(t *testing.T) *os.File {
	f, err := os.Create(filepath.Join(t.TempDir(), "slot"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func contents(t *testing.T, f *os.File) []byte {
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func maxStored(c *bundle.Component) int {
	n := 0
	for _, ch := range c.Chunks {
		n = max(n, int(ch.StoredLength))
	}
	return n
}

func TestFetchManifestAndRefusal(t *testing.T) {
	r := newRig(t)
	apb := build(t, "1.0.0", image(1, 512<<10))
	o, _ := r.offer("dev", "o1", apb)
	r.store.Add("other", apb, trust) // stored, but offered to nobody
	_, f := r.device("dev", 8)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	signed, err := f.Manifest(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.VerifyManifest(signed, trust)
	if err != nil {
		t.Fatalf("VerifyManifest: %v", err)
	}
	if m.Version != "1.0.0" {
		t.Errorf("manifest version = %q", m.Version)
	}
	// A digest that does not match is refused.
	bad := *o
	bad.Digest = bytes.Repeat([]byte{1}, 32)
	if _, err := f.Manifest(ctx, &bad); !errors.Is(err, transport.ErrCorrupt) {
		t.Errorf("Manifest(wrong digest) = %v, want ErrCorrupt", err)
	}
	// A bundle not offered to this device: not-offered, for the manifest and chunks.
	if _, err := f.Manifest(ctx, &transport.Offer{ID: "other"}); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("Manifest(not offered) = %v, want ErrRefused", err)
	}
	err = f.Fetch(ctx, transport.Request{Offer: "other", Comp: &m.Components[0], Sink: sink(t), Done: &transporttest.Progress{}})
	if !errors.Is(err, transport.ErrRefused) {
		t.Errorf("Fetch(not offered) = %v, want ErrRefused", err)
	}
	if got := r.server.Stats.Chunks.Load(); got != 0 {
		t.Errorf("server sent %d chunks of bundles not offered", got)
	}
}

// fault injects a fault once n chunks are done.
type fault struct {
	name   string
	inject func(r *rig, dev string)
}

func TestFetchFaults(t *testing.T) {
	img := image(2, 6<<20)
	apb := build(t, "1.0.0", img)
	const window = 16
	tests := []struct {
		name    string
		inject  func(r *rig) // run once a third of the chunks are done
		restart bool         // cancel the fetch at the fault and start a new device process
	}{
		{"clean", nil, false},
		{"disconnect", func(r *rig) {
			if !r.broker.Kick("dev") {
				r.t.Error("device was not connected at the fault")
			}
		}, false},
		{"broker restart", func(r *rig) { r.broker.Restart(r.t) }, false},
		{"device restart", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			o, m := r.offer("dev", "o1", apb)
			comp := &m.Components[0]
			n := len(comp.Chunks)
			conn, f := r.device("dev", window)
			out := sink(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			fctx, fcancel := context.WithCancel(ctx)
			defer fcancel()
			var once sync.Once
			faultAt := -1
			done := &transporttest.Progress{OnMark: func(k int) {
				if k >= n/3 {
					// Runs on the fetch goroutine: the fault lands mid-transfer.
					once.Do(func() {
						faultAt = k
						if tt.inject != nil {
							tt.inject(r)
						}
						if tt.restart {
							fcancel()
						}
					})
				}
			}}
			req := transport.Request{Offer: o.ID, Digest: o.Digest, Index: 0, Comp: comp, Sink: out, Done: done}
			err := f.Fetch(fctx, req)
			if tt.restart {
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("first Fetch = %v, want canceled", err)
				}
				conn.Close()
				if done.Count() == n {
					t.Fatal("fetch completed before the restart")
				}
				_, f2 := r.device("dev", window)
				f = f2
				err = f.Fetch(ctx, req)
			}
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if faultAt < 0 || faultAt >= n {
				t.Fatalf("fault at chunk %d of %d, want mid-transfer", faultAt, n)
			}
			if got := contents(t, out); !bytes.Equal(got, img) {
				t.Fatalf("slot differs from the image (%d vs %d bytes)", len(got), len(img))
			}
			total := comp.StoredSize()
			sent := int64(r.server.Stats.Bytes.Load())
			extra := sent - total
			limit := int64(window * maxStored(comp))
			t.Logf("%d chunks, %d stored bytes, hub sent %d (extra %d, limit %d), device dup %d, retries %d",
				n, total, sent, extra, limit, f.Stats.DuplicateBytes.Load(), f.Stats.Retries.Load())
			if extra < 0 || extra > limit {
				t.Errorf("hub sent %d bytes more than the component's %d, want 0..%d (one window)", extra, total, limit)
			}
			if tt.inject == nil && !tt.restart && extra != 0 {
				t.Errorf("clean transfer sent %d extra bytes", extra)
			}
		})
	}
}

func TestFetchDelta(t *testing.T) {
	img1 := image(3, 4<<20)
	img2 := bytes.Clone(img1)
	for _, off := range []int{100 << 10, 2 << 20, 4<<20 - 10} {
		copy(img2[off:], "CHANGED!")
	}
	r := newRig(t)
	_, m1 := r.offer("dev", "v1", build(t, "1.0.0", img1))
	o2, m2 := r.offer("dev", "v2", build(t, "2.0.0", img2))
	local := transporttest.NewLocal(&m1.Components[0], img1)

	comp := &m2.Components[0]
	var want int64 // stored bytes of the chunks img1 does not have
	seen := map[string]bool{}
	changed := 0
	for _, ch := range comp.Chunks {
		var k [32]byte
		copy(k[:], ch.SHA256)
		if _, ok := local[k]; ok || seen[string(ch.SHA256)] {
			continue
		}
		seen[string(ch.SHA256)] = true
		want += int64(ch.StoredLength)
		changed++
	}
	if changed == 0 || changed > 6 {
		t.Fatalf("%d changed chunks; the test wants a few", changed)
	}

	_, f := r.device("dev", 16)
	out := sink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := f.Fetch(ctx, transport.Request{Offer: o2.ID, Digest: o2.Digest, Comp: comp, Sink: out, Done: &transporttest.Progress{}, Local: local})
	if err != nil {
		t.Fatal(err)
	}
	if got := contents(t, out); !bytes.Equal(got, img2) {
		t.Fatal("slot differs from the second image")
	}
	if got := int64(f.Stats.Bytes.Load()); got != want {
		t.Errorf("received %d bytes, want %d (the %d changed chunks only)", got, want, changed)
	}
	if got := int64(r.server.Stats.Bytes.Load()); got != want {
		t.Errorf("hub sent %d bytes, want %d", got, want)
	}
	t.Logf("delta: %d of %d chunks, %d of %d stored bytes over the network", changed, len(comp.Chunks), want, comp.StoredSize())
}

// A hub that sends corrupt chunks never gets them written; the fetch gives up.
func TestFetchCorruptGivesUp(t *testing.T) {
	r := newRig(t)
	apb := build(t, "1.0.0", image(4, 256<<10))
	o, m := r.offer("dev", "o1", apb)
	r.broker.Add("dev", []byte("pw-dev"))
	c := dial(t, r.broker.URL(), "dev", []byte("pw-dev"))
	f, err := transport.NewFetcher(c, "dev", transport.FetchOptions{Window: 4, Timeout: 50 * time.Millisecond, MaxRetries: 3, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	comp := m.Components[0]
	// Tamper with the hash table the device trusts: every chunk mismatches.
	for i := range comp.Chunks {
		comp.Chunks[i].SHA256 = bytes.Repeat([]byte{0xee}, 32)
	}
	done := &transporttest.Progress{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = f.Fetch(ctx, transport.Request{Offer: o.ID, Comp: &comp, Sink: sink(t), Done: done})
	if !errors.Is(err, transport.ErrGaveUp) {
		t.Errorf("Fetch = %v, want ErrGaveUp", err)
	}
	if done.Count() != 0 {
		t.Errorf("%d corrupt chunks marked done", done.Count())
	}
	if f.Stats.Corrupt.Load() == 0 {
		t.Error("no corrupt chunk counted")
	}
}

// After a lost link the Fetcher asks again as soon as the connection is
// back: with a re-request timeout far beyond the test's deadline, a fetch
// interrupted by a disconnect still completes, without a single timeout.
func TestFetchReasksOnReconnect(t *testing.T) {
	img := image(5, 4<<20)
	r := newRig(t)
	o, m := r.offer("dev", "o1", build(t, "1.0.0", img))
	comp := &m.Components[0]
	r.broker.Add("dev", []byte("pw-dev"))
	c := dial(t, r.broker.URL(), "dev", []byte("pw-dev"))
	f, err := transport.NewFetcher(c, "dev", transport.FetchOptions{Window: 8, Timeout: time.Hour, MaxRetries: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var once sync.Once
	kicked := false
	done := &transporttest.Progress{OnMark: func(k int) {
		if k >= len(comp.Chunks)/3 {
			once.Do(func() { kicked = r.broker.Kick("dev") })
		}
	}}
	out := sink(t)
	if err := f.Fetch(ctx, transport.Request{Offer: o.ID, Digest: o.Digest, Comp: comp, Sink: out, Done: done}); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if !kicked {
		t.Fatal("the device was not connected at the fault")
	}
	if got := f.Stats.Retries.Load(); got != 0 {
		t.Errorf("Retries = %d, want 0 (asked again on reconnect, not on timeout)", got)
	}
	if got := contents(t, out); !bytes.Equal(got, img) {
		t.Error("slot differs from the image")
	}
}
