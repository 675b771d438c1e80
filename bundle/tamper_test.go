package bundle

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestTamperHeader(t *testing.T) {
	b := buildSpec(t, smallSpec(t.TempDir()), vendorKey)
	trust := trustOf(t, vendorKey)
	for i := range HeaderSize {
		var want error
		switch {
		case i < 8:
			want = ErrMalformed // magic
		case i < 10:
			want = ErrUnsupportedVersion
		case i < 12:
			want = ErrMalformed // flags
		default:
			want = nil // any error: the signed section no longer parses
		}
		_, err := readAll(flip(b, i), trust)
		if err == nil {
			t.Errorf("header byte %d flipped: no error", i)
			continue
		}
		if want != nil && !errors.Is(err, want) {
			t.Errorf("header byte %d flipped: %v, want %v", i, err, want)
		}
	}
}

func TestTamperSignedSection(t *testing.T) {
	b := buildSpec(t, smallSpec(t.TempDir()), vendorKey, operatorKey)
	_, signed, _ := parts(t, b)
	s, err := parseSigned(signed, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	mStart := HeaderSize + bytes.Index(signed, s.Manifest)
	mEnd := mStart + len(s.Manifest)
	// The last 64 bytes of each COSE_Sign1 are its signature value.
	var sigRanges [][2]int
	for _, raw := range s.Signatures {
		end := HeaderSize + bytes.Index(signed, raw) + len(raw)
		sigRanges = append(sigRanges, [2]int{end - 64, end})
	}
	trust := trustOf(t, vendorKey, operatorKey)
	trust.Threshold = 2
	for i := HeaderSize; i < HeaderSize+len(signed); i++ {
		_, err := readAll(flip(b, i), trust)
		if err == nil {
			t.Errorf("signed section byte %d flipped: no error", i)
			continue
		}
		want := error(nil)
		where := "framing"
		if i >= mStart && i < mEnd {
			want, where = ErrSignature, "manifest"
		}
		for k, r := range sigRanges {
			if i >= r[0] && i < r[1] {
				want, where = ErrSignature, fmt.Sprintf("signature %d value", k)
			}
		}
		if want != nil && !errors.Is(err, want) {
			t.Errorf("%s byte %d flipped: %v, want %v", where, i, err, want)
		}
	}
}

func TestTamperPayload(t *testing.T) {
	b := buildSpec(t, smallSpec(t.TempDir()), vendorKey)
	info, err := Inspect(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	layout := Layout(info.Manifest, info.DataOffset)
	for ci, exts := range layout {
		name := info.Manifest.Components[ci].Name
		for ch, e := range exts {
			for i := e.Offset; i < e.Offset+e.Length; i++ {
				_, err := readAll(flip(b, int(i)), trustOf(t, vendorKey))
				if !errors.Is(err, ErrCorruptChunk) {
					t.Fatalf("payload byte %d (component %s chunk %d) flipped: %v, want ErrCorruptChunk", i, name, ch, err)
				}
				if want := fmt.Sprintf("component %q chunk %d", name, ch); !strings.Contains(err.Error(), want) {
					t.Fatalf("payload byte %d flipped: %q does not name %s", i, err, want)
				}
			}
		}
	}
}

func TestTamperMediumPayload(t *testing.T) {
	// Multi-chunk components: flip one byte in every chunk, first and last.
	b := buildSpec(t, mediumSpec(t.TempDir(), "tamper"), vendorKey)
	info, err := Inspect(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	for ci, exts := range Layout(info.Manifest, info.DataOffset) {
		name := info.Manifest.Components[ci].Name
		for ch, e := range exts {
			for _, i := range []int64{e.Offset, e.Offset + e.Length - 1} {
				_, err := readAll(flip(b, int(i)), trustOf(t, vendorKey))
				want := fmt.Sprintf("component %q chunk %d", name, ch)
				if !errors.Is(err, ErrCorruptChunk) || !strings.Contains(err.Error(), want) {
					t.Fatalf("byte %d flipped: %v, want ErrCorruptChunk naming %s", i, err, want)
				}
			}
		}
	}
}

func TestTruncateEveryOffset(t *testing.T) {
	b := buildSpec(t, smallSpec(t.TempDir()), vendorKey)
	for n := 0; n < len(b); n++ {
		_, err := readAll(b[:n], trustOf(t, vendorKey))
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated to %d of %d bytes: %v, want ErrTruncated", n, len(b), err)
		}
	}
}

func TestTruncateMedium(t *testing.T) {
	b := buildSpec(t, mediumSpec(t.TempDir(), "trunc"), vendorKey)
	info, err := Inspect(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var offsets []int64
	for _, exts := range Layout(info.Manifest, info.DataOffset) {
		for _, e := range exts {
			offsets = append(offsets, e.Offset-1, e.Offset, e.Offset+1, e.Offset+e.Length/2)
		}
	}
	for n := int64(0); n < int64(len(b)); n += 7919 {
		offsets = append(offsets, n)
	}
	offsets = append(offsets, int64(len(b)-1))
	for _, n := range offsets {
		for _, ahead := range []int{0, DefaultReadAhead} {
			_, err := readAll(b[:n], trustOf(t, vendorKey), WithReadAhead(ahead))
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("truncated to %d of %d bytes (read-ahead %d): %v, want ErrTruncated", n, len(b), ahead, err)
			}
		}
	}
}

func TestAppendGarbage(t *testing.T) {
	b := buildSpec(t, smallSpec(t.TempDir()), vendorKey)
	for _, tail := range [][]byte{{0}, []byte("garbage"), bytes.Repeat([]byte{0xff}, 100000)} {
		_, err := readAll(append(bytes.Clone(b), tail...), trustOf(t, vendorKey))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes appended: %v, want ErrMalformed", len(tail), err)
		}
	}
}

func TestSwapBetweenBundles(t *testing.T) {
	dir := t.TempDir()
	a := buildSpec(t, mediumSpec(dir, "a"), vendorKey)
	b := buildSpec(t, mediumSpec(dir, "b"), vendorKey)
	ha, sa, pa := parts(t, a)
	_, sb, pb := parts(t, b)
	trust := trustOf(t, vendorKey)

	// a's manifest with b's payload.
	mixed := append(append(bytes.Clone(ha), sa...), pb...)
	if _, err := readAll(mixed, trust); !errors.Is(err, ErrCorruptChunk) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
		t.Errorf("a's manifest over b's payload: %v, want a chunk or length failure", err)
	}
	// a's manifest with b's rootfs chunks and a's other components: the
	// first chunk already differs.
	ia, _ := Inspect(bytes.NewReader(a))
	ib, _ := Inspect(bytes.NewReader(b))
	ra := ia.Manifest.Components[0].StoredSize()
	rb := ib.Manifest.Components[0].StoredSize()
	swapped := append(append(append(bytes.Clone(ha), sa...), pb[:rb]...), pa[ra:]...)
	_, err := readAll(swapped, trust)
	if !errors.Is(err, ErrCorruptChunk) || !strings.Contains(err.Error(), `component "rootfs" chunk 0`) {
		t.Errorf("b's rootfs in a: %v, want ErrCorruptChunk naming rootfs chunk 0", err)
	}
	// b's signature over a's manifest.
	sigA, _ := parseSigned(sa, Limits{})
	sigB, _ := parseSigned(sb, Limits{})
	sigA.Signatures = sigB.Signatures
	var out bytes.Buffer
	if err := writeHead(&out, sigA); err != nil {
		t.Fatal(err)
	}
	out.Write(pa)
	if _, err := readAll(out.Bytes(), trust); !errors.Is(err, ErrSignature) {
		t.Errorf("b's signature on a's manifest: %v, want ErrSignature", err)
	}
}

func TestSignaturePolicy(t *testing.T) {
	dir := t.TempDir()
	vendorOnly := buildSpec(t, smallSpec(dir), vendorKey)
	both := buildSpec(t, smallSpec(dir), vendorKey, operatorKey)
	attacker := resign(t, vendorOnly, func(m *Manifest) { m.SecurityVersion = 99 }, attackerKey)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	withP256 := resign(t, vendorOnly, nil, vendorKey, p256)
	vendorID := pubOf(t, vendorKey).ID
	tests := []struct {
		name  string
		b     []byte
		trust *Trust
		want  error
	}{
		{"vendor trusted", vendorOnly, trustOf(t, vendorKey), nil},
		{"other trusted key also listed", vendorOnly, trustOf(t, operatorKey, vendorKey), nil},
		{"untrusted key", vendorOnly, trustOf(t, operatorKey), ErrUnknownKey},
		{"re-signed by attacker", attacker, trustOf(t, vendorKey), ErrUnknownKey},
		{"revoked", vendorOnly, &Trust{Keys: trustOf(t, vendorKey).Keys, Revoked: []string{vendorID}}, ErrRevokedKey},
		{"revoked but threshold met by another", both, &Trust{Keys: trustOf(t, vendorKey, operatorKey).Keys, Revoked: []string{vendorID}}, nil},
		{"threshold 2 with one signature", vendorOnly, &Trust{Keys: trustOf(t, vendorKey, operatorKey).Keys, Threshold: 2}, ErrThreshold},
		{"threshold 2 met", both, &Trust{Keys: trustOf(t, vendorKey, operatorKey).Keys, Threshold: 2}, nil},
		{"threshold 2, one key revoked", both, &Trust{Keys: trustOf(t, vendorKey, operatorKey).Keys, Threshold: 2, Revoked: []string{vendorID}}, ErrRevokedKey},
		{"threshold 3 of 2 keys", both, &Trust{Keys: trustOf(t, vendorKey, operatorKey).Keys, Threshold: 3}, ErrThreshold},
		{"p256 countersignature", withP256, &Trust{Keys: trustOf(t, vendorKey, p256).Keys, Threshold: 2}, nil},
		{"empty trust", vendorOnly, &Trust{}, ErrUnknownKey},
		{"nil trust", vendorOnly, nil, ErrUnknownKey},
		{"trusted id does not match key", vendorOnly, &Trust{Keys: []PublicKey{{ID: pubOf(t, operatorKey).ID, Key: vendorKey.Public()}}}, ErrMalformed},
		{"no signatures", resign(t, vendorOnly, nil), trustOf(t, vendorKey), ErrUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(tc.b, tc.trust)
			if tc.want == nil && err != nil {
				t.Errorf("err = %v, want none", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKeyAlgorithmMismatch(t *testing.T) {
	// A signature whose kid names a trusted Ed25519 key but whose header
	// claims ES256 must fail, not be verified with the wrong algorithm.
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b := buildSpec(t, smallSpec(t.TempDir()), p256)
	_, signed, _ := parts(t, b)
	s, _ := parseSigned(signed, Limits{})
	vendorID := pubOf(t, vendorKey).ID
	p256ID := pubOf(t, p256).ID
	raw := bytes.Replace(s.Signatures[0], []byte(p256ID), []byte(vendorID), 1)
	s.Signatures[0] = raw
	var out bytes.Buffer
	writeHead(&out, s)
	if _, err := VerifyManifest(out.Bytes()[HeaderSize:], trustOf(t, vendorKey)); !errors.Is(err, ErrSignature) {
		t.Errorf("ES256 signature claiming an Ed25519 key id: %v, want ErrSignature", err)
	}
}

// TestBadManifests signs structurally bad manifests with the trusted key:
// the reader must reject them after verifying the signature.
func TestBadManifests(t *testing.T) {
	b := buildSpec(t, mediumSpec(t.TempDir(), "bad"), vendorKey)
	tests := []struct {
		name   string
		mutate func(*Manifest)
		want   error
	}{
		{"format version", func(m *Manifest) { m.FormatVersion = 2 }, ErrUnsupportedVersion},
		{"no name", func(m *Manifest) { m.Name = "" }, ErrMalformed},
		{"bad version", func(m *Manifest) { m.Version = "v1" }, ErrMalformed},
		{"bad severity", func(m *Manifest) { m.Severity = "meh" }, ErrMalformed},
		{"no components", func(m *Manifest) { m.Components = []Component{} }, ErrMalformed},
		{"duplicate component", func(m *Manifest) { m.Components[1].Name = m.Components[0].Name }, ErrMalformed},
		{"unknown kind", func(m *Manifest) { m.Components[0].Kind = "blob" }, ErrMalformed},
		{"unknown compression", func(m *Manifest) { m.Components[0].Compression = "lz4" }, ErrMalformed},
		{"dependency cycle", func(m *Manifest) {
			m.Components[0].Depends = []Dependency{{Name: "app"}}
		}, ErrMalformed},
		{"bad constraint", func(m *Manifest) { m.Components[1].Depends[0].Constraint = ">>1" }, ErrMalformed},
		{"gap in chunk table", func(m *Manifest) { m.Components[0].Chunks[1].Offset++ }, ErrMalformed},
		{"chunk too long", func(m *Manifest) { m.Components[0].Chunks[0].Length = MaxChunk + 1 }, ErrMalformed},
		{"stored longer than chunk", func(m *Manifest) { m.Components[0].Chunks[0].StoredLength = m.Components[0].Chunks[0].Length + 1 }, ErrMalformed},
		{"size beyond chunks", func(m *Manifest) { m.Components[0].Size += 1 }, ErrMalformed},
		{"huge size", func(m *Manifest) { m.Components[0].Size = 1 << 62 }, ErrMalformed},
		{"short chunk hash", func(m *Manifest) { m.Components[0].Chunks[0].SHA256 = m.Components[0].Chunks[0].SHA256[:31] }, ErrMalformed},
		{"too many components", func(m *Manifest) {
			for i := len(m.Components); i <= DefaultMaxComponents; i++ {
				c := m.Components[2]
				c.Name = fmt.Sprintf("extra%d", i)
				m.Components = append(m.Components, c)
			}
		}, ErrTooLarge},
		{"wrong chunk hash", func(m *Manifest) { m.Components[0].Chunks[2].SHA256[0] ^= 1 }, ErrCorruptChunk},
		{"wrong payload hash", func(m *Manifest) { m.Components[1].SHA256[0] ^= 1 }, ErrCorruptChunk}, // with WithPayloadHash
		{"raw chunk claimed compressed", func(m *Manifest) { m.Components[0].Chunks[0].StoredLength-- }, ErrMalformed},
		{"stored hash on a raw chunk", func(m *Manifest) { m.Components[0].Chunks[0].StoredSHA256 = make([]byte, 32) }, ErrMalformed},
		{"compressed stored length shifted", func(m *Manifest) { m.Components[1].Chunks[0].StoredLength-- }, ErrCorruptChunk},
		{"wrong stored hash", func(m *Manifest) { m.Components[1].Chunks[0].StoredSHA256[5] ^= 1 }, ErrCorruptChunk},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(resign(t, b, tc.mutate, vendorKey), trustOf(t, vendorKey), WithPayloadHash(true))
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNonCanonicalManifest(t *testing.T) {
	b := buildSpec(t, smallSpec(t.TempDir()), vendorKey)
	_, signed, payload := parts(t, b)
	s, _ := parseSigned(signed, Limits{})
	// Re-encode the manifest's first map header in a longer form: the same
	// value, a different encoding. Properly signed, it must still be refused.
	m := s.Manifest
	if m[0]&0xe0 != 0xa0 || m[0]&0x1f >= 24 {
		t.Fatalf("manifest does not start with a short map header: %#x", m[0])
	}
	long := append([]byte{0xb8, m[0] & 0x1f}, m[1:]...)
	if _, err := readAll(assemble(t, long, payload, vendorKey), trustOf(t, vendorKey)); !errors.Is(err, ErrMalformed) {
		t.Errorf("non-canonical manifest: %v, want ErrMalformed", err)
	}
	// Trailing bytes after the manifest map.
	if _, err := readAll(assemble(t, append(bytes.Clone(m), 0), payload, vendorKey), trustOf(t, vendorKey)); !errors.Is(err, ErrMalformed) {
		t.Errorf("manifest with a trailing byte: %v, want ErrMalformed", err)
	}
}

func TestLimits(t *testing.T) {
	b := buildSpec(t, smallSpec(t.TempDir()), vendorKey)
	trust := trustOf(t, vendorKey)
	if _, err := readAll(b, trust, WithLimits(Limits{MaxManifest: 100})); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxManifest 100: %v, want ErrTooLarge", err)
	}
	if _, err := readAll(b, trust, WithLimits(Limits{MaxTotalSize: 100})); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxTotalSize 100: %v, want ErrTooLarge", err)
	}
	if _, err := readAll(b, trust, WithLimits(Limits{MaxComponents: 2})); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxComponents 2: %v, want ErrTooLarge", err)
	}
	// A header claiming the largest signed section must not make the reader
	// allocate it before the bytes arrive.
	h := bytes.Clone(b[:HeaderSize])
	binary.BigEndian.PutUint32(h[12:], uint32(Limits{}.signedMax()))
	allocs := testing.AllocsPerRun(5, func() {
		if _, err := Open(bytes.NewReader(h), trust); !errors.Is(err, ErrTruncated) {
			t.Errorf("huge claimed section, no bytes: %v, want ErrTruncated", err)
		}
	})
	_ = allocs
	binary.BigEndian.PutUint32(h[12:], uint32(Limits{}.signedMax()+1))
	if _, err := Open(bytes.NewReader(h), trust); !errors.Is(err, ErrTooLarge) {
		t.Errorf("signed section beyond the limit: %v, want ErrTooLarge", err)
	}
}

func TestDecompressionBomb(t *testing.T) {
	enc, err := zstdEncoder()
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, MaxChunk)
	z := enc.EncodeAll(big, nil)
	tests := []struct {
		name   string
		length uint32
	}{
		{"declared smaller than frame", 1000},
		{"declared one byte short", MaxChunk - 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Component{Name: "bomb", Compression: CompressionZstd, Chunks: []Chunk{{Length: tc.length, StoredLength: uint32(len(z)), SHA256: make([]byte, 32), StoredSHA256: sha(z)}}}
			_, err := c.VerifyChunk(0, z)
			if !errors.Is(err, ErrCorruptChunk) || !strings.Contains(err.Error(), `component "bomb" chunk 0`) {
				t.Errorf("VerifyChunk = %v, want ErrCorruptChunk naming the chunk", err)
			}
		})
	}
	// A frame that would decode beyond MaxChunk is refused by the decoder.
	huge := enc.EncodeAll(make([]byte, 4*MaxChunk), nil)
	c := &Component{Name: "bomb", Compression: CompressionZstd, Chunks: []Chunk{{Length: MaxChunk, StoredLength: uint32(len(huge)), SHA256: make([]byte, 32), StoredSHA256: sha(huge)}}}
	if _, err := c.VerifyChunk(0, huge); !errors.Is(err, ErrCorruptChunk) {
		t.Errorf("VerifyChunk of a 1 MiB frame = %v, want ErrCorruptChunk", err)
	}
}

var _ crypto.Signer = vendorKey

func sha(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestTamperChunkTable(t *testing.T) {
	// Flip one byte of a chunk's hash and of its length inside the signed
	// manifest: the signature no longer covers it.
	b := buildSpec(t, mediumSpec(t.TempDir(), "table"), vendorKey)
	info, err := Inspect(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	ch := info.Manifest.Components[0].Chunks[1]
	at := bytes.Index(b, ch.SHA256)
	if at < 0 {
		t.Fatal("chunk hash not found in the file")
	}
	for _, i := range []int{at, at + 31, at - 3} {
		if _, err := readAll(flip(b, i), trustOf(t, vendorKey)); !errors.Is(err, ErrSignature) {
			t.Errorf("chunk table byte %d flipped: %v, want ErrSignature", i, err)
		}
	}
}

func TestExpired(t *testing.T) {
	m := &Manifest{Created: 100, Expires: 200}
	for _, tc := range []struct {
		now  int64
		want bool
	}{{150, false}, {200, true}, {300, true}} {
		if got := m.Expired(time.Unix(tc.now, 0)); got != tc.want {
			t.Errorf("Expired(%d) = %v, want %v", tc.now, got, tc.want)
		}
	}
	if (&Manifest{Created: 100}).Expired(time.Unix(1<<40, 0)) {
		t.Errorf("a manifest without expiry expired")
	}
}
