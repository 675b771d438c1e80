package bundle

import (
	"fmt"
	"slices"
)

// Trust is what a verifier believes: the public keys it accepts, how many
// distinct trusted keys must have signed (Threshold, default 1) and key ids
// that must no longer count even if listed in Keys.
type Trust struct {
	Keys      []PublicKey
	Threshold int
	Revoked   []string
}

func (t *Trust) threshold() int {
	if t.Threshold <= 0 {
		return 1
	}
	return t.Threshold
}

func (t *Trust) lookup(kid string) (PublicKey, bool) {
	for _, k := range t.Keys {
		if k.ID == kid {
			return k, true
		}
	}
	return PublicKey{}, false
}

func (t *Trust) revoked(kid string) bool { return slices.Contains(t.Revoked, kid) }

// check rejects a trust store that can never be satisfied.
func (t *Trust) check() error {
	if t == nil || len(t.Keys) == 0 {
		return fmt.Errorf("verify signatures: empty trust store: %w", ErrUnknownKey)
	}
	for _, k := range t.Keys {
		id, err := KeyID(k.Key)
		if err != nil {
			return fmt.Errorf("verify signatures: trusted key %s: %w", k.ID, err)
		}
		if id != k.ID {
			return fmt.Errorf("verify signatures: trusted key id %q does not match its key (%s): %w", k.ID, id, ErrMalformed)
		}
	}
	return nil
}
