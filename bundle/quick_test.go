package bundle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"io"
	"math/rand/v2"
	"testing"
)

func TestQuick(t *testing.T) {
	seed := [32]byte{1}
	key := ed25519.NewKeyFromSeed(seed[:])
	data := make([]byte, 3<<20)
	rng := rand.NewChaCha8(seed)
	rng.Read(data[:2<<20])
	m := &Manifest{Name: "x", Version: "1.0.0", Severity: SeverityNormal, Compatible: []string{"a"},
		Components: []Component{{Name: "rootfs", Kind: KindImage, Slot: "rootfs", Version: "1.0.0", Compression: CompressionZstd}}}
	var out bytes.Buffer
	if err := Build(context.Background(), &out, m, []io.Reader{bytes.NewReader(data)}, []crypto.Signer{key}, BuildOptions{TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	t.Logf("bundle %d bytes, %d chunks", out.Len(), len(m.Components[0].Chunks))
	pub, _ := NewPublicKey(key.Public())
	r, err := Open(bytes.NewReader(out.Bytes()), &Trust{Keys: []PublicKey{pub}})
	if err != nil {
		t.Fatal(err)
	}
	_, pr, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("mismatch")
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatal(err)
	}
}
