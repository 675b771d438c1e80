package bundle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Test keys come from fixed seeds so that golden bundles are reproducible.
func seedKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("autopatcher test key " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

var (
	vendorKey   = seedKey("vendor")
	operatorKey = seedKey("operator")
	attackerKey = seedKey("attacker")
)

func pubOf(t testing.TB, k crypto.Signer) PublicKey {
	t.Helper()
	p, err := NewPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func trustOf(t testing.TB, keys ...crypto.Signer) *Trust {
	t.Helper()
	tr := &Trust{}
	for _, k := range keys {
		tr.Keys = append(tr.Keys, pubOf(t, k))
	}
	return tr
}

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(seed string, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(sha256.Sum256([]byte(seed))).Read(b)
	return b
}

// textBytes returns n bytes of compressible, varied text.
func textBytes(seed string, n int) []byte {
	words := []string{"update ", "slot ", "rootfs ", "boot ", "chunk ", "verify ", "device ", "fleet\n"}
	r := rand.New(rand.NewPCG(uint64(len(seed)), uint64(n)))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

// smallSpec is the golden bundle: three small components, one chunk each,
// with dependencies; a few KiB in all.
func smallSpec(dir string) *Spec {
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			panic(err)
		}
		return name
	}
	return &Spec{
		Name: "golden", Version: "1.2.3", SecurityVersion: 4, Compatible: []string{"rpi4", "qemu-armv7"},
		Created: "2026-01-02T03:04:05Z", Expires: "2160h", Severity: SeveritySecurity,
		CVEs: []string{"CVE-2026-1234"}, Description: "golden test bundle",
		Requires: []DependSpec{{Name: "bootloader", Version: ">= 2023.1"}},
		Components: []ComponentSpec{
			{Name: "rootfs", Kind: KindImage, Slot: "rootfs", Version: "1.2.3", Compression: CompressionNone,
				Source: write("rootfs.img", randBytes("rootfs", 2000)), Depends: []DependSpec{{Name: "bootloader"}}},
			{Name: "app", Kind: KindPackage, Path: "/opt/app", Version: "0.9.0", Compression: CompressionZstd,
				Source: write("app.tar", textBytes("app", 3000)), Depends: []DependSpec{{Name: "rootfs", Version: "^1.2"}}},
			{Name: "conf", Kind: KindFile, Path: "/etc/app.conf", Version: "1.0.0", Compression: CompressionZstd,
				Source: write("app.conf", []byte("mode = test\n"))},
		},
		Dir: dir,
	}
}

// mediumSpec has multi-chunk components (about 1 MiB in all), random and
// compressible.
func mediumSpec(dir, seed string) *Spec {
	s := smallSpec(dir)
	data := append(randBytes(seed+"rootfs", 600<<10), textBytes(seed+"rootfs", 300<<10)...)
	if err := os.WriteFile(filepath.Join(dir, "rootfs-"+seed+".img"), data, 0o644); err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app-"+seed+".tar"), textBytes(seed+"app", 200<<10), 0o644); err != nil {
		panic(err)
	}
	s.Name = "medium"
	s.Components[0].Source = "rootfs-" + seed + ".img"
	s.Components[0].Compression = CompressionZstd
	s.Components[1].Source = "app-" + seed + ".tar"
	return s
}

func buildSpec(t testing.TB, s *Spec, keys ...crypto.Signer) []byte {
	t.Helper()
	var out bytes.Buffer
	if _, err := BuildSpec(context.Background(), &out, s, time.Time{}, keys, BuildOptions{TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// readAll opens and drains a bundle, returning the payloads or the first
// error.
func readAll(b []byte, trust *Trust, opts ...Option) (map[string][]byte, error) {
	r, err := Open(bytes.NewReader(b), trust, opts...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out := map[string][]byte{}
	for {
		c, p, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, err
		}
		out[c.Name] = data
	}
}

// parts splits a bundle into header, signed section and payload.
func parts(t testing.TB, b []byte) (hdr, signed, payload []byte) {
	t.Helper()
	info, err := Inspect(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return b[:HeaderSize], b[HeaderSize:info.DataOffset], b[info.DataOffset:]
}

// resign replaces a bundle's manifest by mutate's result, signed by keys,
// keeping the payload as it is.
func resign(t testing.TB, b []byte, mutate func(*Manifest), keys ...crypto.Signer) []byte {
	t.Helper()
	_, signed, payload := parts(t, b)
	s, err := parseSigned(signed, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := manifestDec.Unmarshal(s.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&m)
	}
	mb, err := encMode.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return assemble(t, mb, payload, keys...)
}

// assemble builds a bundle from raw manifest bytes and payload.
func assemble(t testing.TB, manifest, payload []byte, keys ...crypto.Signer) []byte {
	t.Helper()
	s := &signedSection{Manifest: manifest}
	for _, k := range keys {
		if _, err := s.sign(k); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := writeHead(&out, s); err != nil {
		t.Fatal(err)
	}
	out.Write(payload)
	return out.Bytes()
}
