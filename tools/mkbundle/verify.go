package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/autopatcher/autopatcher/bundle"
)

// verify checks the signatures, the manifest and every chunk of a bundle
// and prints one "OK ..." line only if all of it verifies.
func verify(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("verify", stderr)
	var trustPaths, revoked multi
	fs.Var(&trustPaths, "trust", "trusted public key (PEM); repeatable")
	fs.Var(&revoked, "revoked", "revoked key id; repeatable")
	threshold := fs.Int("threshold", 1, "distinct trusted signatures required")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(trustPaths) == 0 || len(pos) != 1 {
		return fmt.Errorf("verify: want --trust PUB [--trust PUB2] [--threshold N] [--revoked KID] FILE.apb")
	}
	trust, err := loadTrust(trustPaths, *threshold, revoked)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	sum, err := verifyFile(pos[0], trust)
	if err != nil {
		return fmt.Errorf("verify %s: %s: %w", pos[0], checkName(err), err)
	}
	fmt.Fprintf(stdout, "OK %s\n", sum)
	return nil
}

// verifyFile reads the whole bundle through bundle.Open and returns a
// one-line summary.
func verifyFile(path string, trust *bundle.Trust) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r, err := bundle.Open(f, trust, bundle.WithPayloadHash(true))
	if err != nil {
		return "", err
	}
	defer r.Close()
	var chunks int
	var size uint64
	for {
		c, p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		if _, err := io.Copy(io.Discard, p); err != nil {
			return "", err
		}
		chunks += len(c.Chunks)
		size += c.Size
	}
	m := r.Manifest()
	s := fmt.Sprintf("%s %s: %d components, %d chunks, %d bytes verified; security version %d; signed by %s",
		m.Name, m.Version, len(m.Components), chunks, size, m.SecurityVersion, strings.Join(r.Signers(), ", "))
	if m.Expires != 0 {
		s += "; expires " + unix(m.Expires)
	}
	return s, nil
}

// checkName names the failed check for the error message.
func checkName(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{bundle.ErrSignature, "signature check failed"},
		{bundle.ErrUnknownKey, "no trusted signature"},
		{bundle.ErrRevokedKey, "revoked key"},
		{bundle.ErrThreshold, "signature threshold not met"},
		{bundle.ErrTruncated, "file truncated"},
		{bundle.ErrCorruptChunk, "chunk check failed"},
		{bundle.ErrTooLarge, "size limit exceeded"},
		{bundle.ErrUnsupportedVersion, "unsupported format version"},
		{bundle.ErrMalformed, "malformed bundle"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "read failed"
}
