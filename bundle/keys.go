package bundle

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"

	"github.com/veraison/go-cose"
)

// Key algorithms mkbundle can generate and the verifier accepts.
const (
	AlgEd25519 = "ed25519"
	AlgP256    = "p256"
)

// PublicKey is a trusted verification key with its key id.
type PublicKey struct {
	ID  string           // KeyID(Key)
	Key crypto.PublicKey // ed25519.PublicKey or *ecdsa.PublicKey on P-256
}

// KeyID derives a key's id: the first 16 bytes of the SHA-256 of its
// PKIX SubjectPublicKeyInfo DER encoding, in lower-case hex (32 characters).
// The same id is carried in the COSE kid header of every signature the key
// makes.
func KeyID(pub crypto.PublicKey) (string, error) {
	if _, err := coseAlg(pub); err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("derive key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16]), nil
}

// coseAlg maps a supported public key to its COSE algorithm.
func coseAlg(pub crypto.PublicKey) (cose.Algorithm, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return 0, fmt.Errorf("ed25519 key of %d bytes: %w", len(k), ErrMalformed)
		}
		return cose.AlgorithmEdDSA, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return 0, fmt.Errorf("ecdsa key on %s, want P-256: %w", k.Curve.Params().Name, ErrMalformed)
		}
		return cose.AlgorithmES256, nil
	default:
		return 0, fmt.Errorf("unsupported key type %T (want ed25519 or ecdsa P-256): %w", pub, ErrMalformed)
	}
}

// NewPublicKey wraps a supported public key with its id.
func NewPublicKey(pub crypto.PublicKey) (PublicKey, error) {
	id, err := KeyID(pub)
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKey{ID: id, Key: pub}, nil
}

// ReadPublicKey parses a PEM "PUBLIC KEY" block (PKIX) holding an Ed25519 or
// ECDSA P-256 key.
func ReadPublicKey(pemBytes []byte) (PublicKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return PublicKey{}, fmt.Errorf("read public key: no PEM PUBLIC KEY block: %w", ErrMalformed)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return PublicKey{}, fmt.Errorf("read public key: %v: %w", err, ErrMalformed)
	}
	k, err := NewPublicKey(pub)
	if err != nil {
		return PublicKey{}, fmt.Errorf("read public key: %w", err)
	}
	return k, nil
}

// ReadPrivateKey parses a PEM "PRIVATE KEY" block (PKCS#8) holding an Ed25519
// or ECDSA P-256 key.
func ReadPrivateKey(pemBytes []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read private key: no PEM PRIVATE KEY block: %w", ErrMalformed)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read private key: %v: %w", err, ErrMalformed)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("read private key: %T is not a signing key: %w", k, ErrMalformed)
	}
	if _, err := coseAlg(s.Public()); err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	return s, nil
}

// GenerateKey creates a new signing key; alg is AlgEd25519 or AlgP256.
func GenerateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case AlgEd25519, "":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case AlgP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("generate key: unknown algorithm %q (want %s or %s)", alg, AlgEd25519, AlgP256)
	}
}

// MarshalPrivateKey encodes a signing key as PEM PKCS#8.
func MarshalPrivateKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey encodes a public key as PEM PKIX.
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
