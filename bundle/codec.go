package bundle

import (
	"bytes"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// The manifest is encoded with CBOR core deterministic encoding (RFC 8949
// section 4.2.1). A decoder accepts only that encoding: after decoding, the
// manifest is encoded again and must reproduce the input byte for byte, so
// every manifest has exactly one valid encoding.
var (
	encMode = mustEncMode()
	// manifestDec decodes manifests: no tags, no indefinite lengths, no
	// duplicate or unknown map keys, bounded nesting and container sizes.
	manifestDec = mustDecMode(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  1 << 20,
		MaxMapPairs:       64,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	})
	// signedDec decodes the signed section. Tags are allowed (COSE_Sign1 is
	// tagged); go-cose decodes each signature with its own strict mode.
	signedDec = mustDecMode(cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: 1024,
		MaxMapPairs:      64,
		UTF8:             cbor.UTF8RejectInvalid,
	})
)

func mustEncMode() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	opts.NilContainers = cbor.NilContainerAsEmpty
	m, err := opts.EncMode()
	if err != nil {
		panic(err)
	}
	return m
}

func mustDecMode(o cbor.DecOptions) cbor.DecMode {
	m, err := o.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}

// MarshalManifest encodes m in the deterministic encoding signatures cover.
func MarshalManifest(m *Manifest) ([]byte, error) {
	b, err := encMode.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return b, nil
}

// UnmarshalManifest decodes an encoded manifest and checks that it is in
// deterministic encoding and structurally valid (see Manifest.Validate). It
// does not check signatures: call it only on bytes already verified, or use
// VerifyManifest.
func UnmarshalManifest(b []byte) (*Manifest, error) {
	return unmarshalManifest(b, Limits{})
}

func unmarshalManifest(b []byte, lim Limits) (*Manifest, error) {
	lim = lim.withDefaults()
	if int64(len(b)) > lim.MaxManifest {
		return nil, fmt.Errorf("decode manifest: %d bytes exceeds the limit of %d: %w", len(b), lim.MaxManifest, ErrTooLarge)
	}
	var m Manifest
	if err := manifestDec.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode manifest: %v: %w", err, ErrMalformed)
	}
	again, err := encMode.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("decode manifest: %v: %w", err, ErrMalformed)
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("decode manifest: not in deterministic encoding: %w", ErrMalformed)
	}
	if err := m.validate(lim); err != nil {
		return nil, err
	}
	return &m, nil
}
