package bundle

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"fmt"
	"slices"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// ContentType is the COSE content type (protected header label 3) of every
// bundle signature. It keeps a bundle signature from being valid for any
// other COSE payload signed with the same key.
const ContentType = "application/vnd.autopatcher.manifest+cbor"

// signedSection is the CBOR array between the header and the payload:
//
//	[ manifest: bstr, signatures: [+ COSE_Sign1_Tagged] ]
//
// The manifest bytes appear once. Each COSE_Sign1 has a detached (nil)
// payload; its signature covers the manifest bytes.
type signedSection struct {
	_          struct{} `cbor:",toarray"`
	Manifest   []byte
	Signatures []cbor.RawMessage
}

// Signature describes one signature of a bundle, as found in the file.
type Signature struct {
	KeyID     string `json:"key_id"`
	Algorithm string `json:"algorithm"` // "EdDSA" or "ES256"
}

func marshalSigned(s *signedSection) ([]byte, error) {
	b, err := encMode.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode signed section: %w", err)
	}
	return b, nil
}

// parseSigned decodes the signed section without verifying anything but its
// shape.
func parseSigned(b []byte, lim Limits) (*signedSection, error) {
	lim = lim.withDefaults()
	if int64(len(b)) > lim.signedMax() {
		return nil, fmt.Errorf("decode signed section: %d bytes: %w", len(b), ErrTooLarge)
	}
	var s signedSection
	if err := signedDec.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode signed section: %v: %w", err, ErrMalformed)
	}
	if again, err := encMode.Marshal(&s); err != nil || !bytes.Equal(again, b) {
		return nil, fmt.Errorf("decode signed section: not in deterministic encoding: %w", ErrMalformed)
	}
	if len(s.Manifest) == 0 {
		return nil, fmt.Errorf("decode signed section: empty manifest: %w", ErrMalformed)
	}
	if int64(len(s.Manifest)) > lim.MaxManifest {
		return nil, fmt.Errorf("decode signed section: manifest of %d bytes exceeds the limit of %d: %w", len(s.Manifest), lim.MaxManifest, ErrTooLarge)
	}
	if len(s.Signatures) == 0 {
		return nil, fmt.Errorf("decode signed section: no signatures: %w", ErrUnknownKey)
	}
	if len(s.Signatures) > lim.MaxSignatures {
		return nil, fmt.Errorf("decode signed section: %d signatures exceeds the limit of %d: %w", len(s.Signatures), lim.MaxSignatures, ErrTooLarge)
	}
	return &s, nil
}

// parsedSig is one decoded COSE_Sign1 of the signed section.
type parsedSig struct {
	msg *cose.Sign1Message
	kid string
	alg cose.Algorithm
}

func parseSig(i int, raw []byte) (*parsedSig, error) {
	if len(raw) > maxSignatureBytes {
		return nil, fmt.Errorf("signature %d: %d bytes: %w", i, len(raw), ErrTooLarge)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(raw); err != nil {
		return nil, fmt.Errorf("signature %d: %v: %w", i, err, ErrMalformed)
	}
	if msg.Payload != nil {
		return nil, fmt.Errorf("signature %d: payload must be detached: %w", i, ErrMalformed)
	}
	if !bytes.Equal(msg.Headers.RawUnprotected, []byte{0xa0}) {
		return nil, fmt.Errorf("signature %d: unprotected header must be empty: %w", i, ErrMalformed)
	}
	kid, ok := msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	if !ok || len(kid) == 0 {
		return nil, fmt.Errorf("signature %d: no key id in the protected header: %w", i, ErrMalformed)
	}
	if ct, _ := msg.Headers.Protected[cose.HeaderLabelContentType].(string); ct != ContentType {
		return nil, fmt.Errorf("signature %d (key %s): content type %q, want %q: %w", i, kid, ct, ContentType, ErrSignature)
	}
	alg, err := msg.Headers.Protected.Algorithm()
	if err != nil {
		return nil, fmt.Errorf("signature %d (key %s): %v: %w", i, kid, err, ErrMalformed)
	}
	return &parsedSig{msg: &msg, kid: string(kid), alg: alg}, nil
}

// signatures lists the key ids and algorithms of a signed section, unverified.
func (s *signedSection) signatures() ([]Signature, error) {
	var out []Signature
	for i, raw := range s.Signatures {
		p, err := parseSig(i, raw)
		if err != nil {
			return nil, fmt.Errorf("decode signed section: %w", err)
		}
		out = append(out, Signature{KeyID: p.kid, Algorithm: p.alg.String()})
	}
	return out, nil
}

// verify checks the signatures against trust and returns the ids of the
// trusted keys that signed. A signature made by a trusted key that does not
// verify fails the whole section: it is evidence of tampering.
func (s *signedSection) verify(trust *Trust) ([]string, error) {
	if err := trust.check(); err != nil {
		return nil, err
	}
	var signers []string
	var revoked, unknown []string
	for i, raw := range s.Signatures {
		p, err := parseSig(i, raw)
		if err != nil {
			return nil, fmt.Errorf("verify signatures: %w", err)
		}
		key, ok := trust.lookup(p.kid)
		switch {
		case trust.revoked(p.kid):
			revoked = append(revoked, p.kid)
			continue
		case !ok:
			unknown = append(unknown, p.kid)
			continue
		}
		want, err := coseAlg(key.Key)
		if err != nil {
			return nil, fmt.Errorf("verify signatures: key %s: %w", key.ID, err)
		}
		if p.alg != want {
			return nil, fmt.Errorf("verify signatures: signature %d (key %s): algorithm %s, key is %s: %w", i, p.kid, p.alg, want, ErrSignature)
		}
		v, err := cose.NewVerifier(want, key.Key)
		if err != nil {
			return nil, fmt.Errorf("verify signatures: key %s: %v: %w", key.ID, err, ErrSignature)
		}
		p.msg.Payload = s.Manifest
		err = p.msg.Verify(nil, v)
		p.msg.Payload = nil
		if err != nil {
			return nil, fmt.Errorf("verify signatures: signature %d (key %s): %v: %w", i, p.kid, err, ErrSignature)
		}
		if !slices.Contains(signers, p.kid) {
			signers = append(signers, p.kid)
		}
	}
	if len(signers) >= trust.threshold() {
		return signers, nil
	}
	switch {
	case len(revoked) > 0:
		return nil, fmt.Errorf("verify signatures: %d of %d required trusted signatures; revoked keys %v: %w", len(signers), trust.threshold(), revoked, ErrRevokedKey)
	case len(signers) == 0:
		return nil, fmt.Errorf("verify signatures: none of the signing keys %v is trusted: %w", unknown, ErrUnknownKey)
	default:
		return nil, fmt.Errorf("verify signatures: %d of %d required trusted signatures (by %v): %w", len(signers), trust.threshold(), signers, ErrThreshold)
	}
}

// sign adds a signature by key over the section's manifest. Signing twice
// with the same key is an error.
func (s *signedSection) sign(key crypto.Signer) (string, error) {
	kid, err := KeyID(key.Public())
	if err != nil {
		return "", fmt.Errorf("sign manifest: %w", err)
	}
	alg, _ := coseAlg(key.Public())
	for i, raw := range s.Signatures {
		p, err := parseSig(i, raw)
		if err != nil {
			return "", fmt.Errorf("sign manifest: %w", err)
		}
		if p.kid == kid {
			return "", fmt.Errorf("sign manifest: key %s has already signed this bundle", kid)
		}
	}
	signer, err := cose.NewSigner(alg, key)
	if err != nil {
		return "", fmt.Errorf("sign manifest: %w", err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(alg)
	msg.Headers.Protected[cose.HeaderLabelContentType] = ContentType
	msg.Headers.Protected[cose.HeaderLabelKeyID] = []byte(kid)
	msg.Payload = s.Manifest
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		return "", fmt.Errorf("sign manifest: %w", err)
	}
	msg.Payload = nil
	raw, err := msg.MarshalCBOR()
	if err != nil {
		return "", fmt.Errorf("sign manifest: %w", err)
	}
	s.Signatures = append(s.Signatures, raw)
	return kid, nil
}

// VerifyManifest verifies a signed section (as returned by
// Reader.SignedManifest, and as sent by a hub to a device) against trust and
// only then decodes and validates the manifest.
func VerifyManifest(signed []byte, trust *Trust, opts ...Option) (*Manifest, error) {
	m, _, err := verifySection(signed, trust, newOptions(opts))
	return m, err
}

func verifySection(signed []byte, trust *Trust, o options) (*Manifest, []string, error) {
	s, err := parseSigned(signed, o.limits)
	if err != nil {
		return nil, nil, err
	}
	signers, err := s.verify(trust)
	if err != nil {
		return nil, nil, err
	}
	m, err := unmarshalManifest(s.Manifest, o.limits)
	if err != nil {
		return nil, nil, err
	}
	return m, signers, nil
}
