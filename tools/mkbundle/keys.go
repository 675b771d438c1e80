package main

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"os"

	"github.com/autopatcher/autopatcher/bundle"
)

// keygen writes NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (PKIX PEM).
func keygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", stderr)
	alg := fs.String("alg", bundle.AlgEd25519, "key algorithm: ed25519 or p256")
	out := fs.String("out", "", "write NAME.key and NAME.pub")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *out == "" || len(pos) != 0 {
		return fmt.Errorf("keygen: want --out NAME and no other arguments")
	}
	key, err := bundle.GenerateKey(*alg)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	priv, err := bundle.MarshalPrivateKey(key)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	pub, err := bundle.MarshalPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	kid, err := bundle.KeyID(key.Public())
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	// O_EXCL: never overwrite an existing key.
	f, err := os.OpenFile(*out+".key", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if _, err := f.Write(priv); err != nil {
		f.Close()
		return fmt.Errorf("keygen: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := os.WriteFile(*out+".pub", pub, 0o644); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s.key and %s.pub (%s, key id %s)\n", *out, *out, *alg, kid)
	return nil
}

func loadSigners(paths []string) ([]crypto.Signer, error) {
	var keys []crypto.Signer
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		k, err := bundle.ReadPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func loadTrust(paths []string, threshold int, revoked []string) (*bundle.Trust, error) {
	t := &bundle.Trust{Threshold: threshold, Revoked: revoked}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		k, err := bundle.ReadPublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		t.Keys = append(t.Keys, k)
	}
	return t, nil
}
