package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/autopatcher/autopatcher/bundle"
)

// sign adds a countersignature to an existing bundle without rebuilding its
// payload. With --trust, the bundle is fully verified first.
func sign(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sign", stderr)
	keyPath := fs.String("k", "", "signing key (PEM PKCS#8)")
	out := fs.String("o", "", "output bundle (may equal the input)")
	var trustPaths multi
	fs.Var(&trustPaths, "trust", "verify the bundle against this public key before signing; repeatable")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *keyPath == "" || *out == "" || len(pos) != 1 {
		return fmt.Errorf("sign: want -k KEY IN.apb -o OUT.apb")
	}
	in := pos[0]
	keys, err := loadSigners([]string{*keyPath})
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if len(trustPaths) > 0 {
		trust, err := loadTrust(trustPaths, 0, nil)
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		if _, err := verifyFile(in, trust); err != nil {
			return fmt.Errorf("sign: refusing to countersign %s: %w", in, err)
		}
	}
	f, err := os.Open(in)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	defer f.Close()
	var kid string
	err = writeAtomic(*out, 0o644, func(w io.Writer) error {
		var err error
		kid, err = bundle.Countersign(w, f, keys[0])
		return err
	})
	if err != nil {
		return fmt.Errorf("sign: %s: %w", in, err)
	}
	fmt.Fprintf(stdout, "signed %s with key %s\n", *out, kid)
	return nil
}
