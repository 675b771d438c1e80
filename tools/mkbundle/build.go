package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/autopatcher/autopatcher/bundle"
)

// build creates and signs a bundle from a YAML spec.
func build(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("build", stderr)
	specPath := fs.String("f", "", "bundle spec (YAML)")
	out := fs.String("o", "", "output bundle")
	var keyPaths multi
	fs.Var(&keyPaths, "k", "signing key (PEM PKCS#8); repeat for several signatures")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *specPath == "" || *out == "" || len(keyPaths) == 0 || len(pos) != 0 {
		return fmt.Errorf("build: want -f SPEC -k KEY [-k KEY2] -o OUT.apb")
	}
	spec, err := bundle.LoadSpec(*specPath)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	keys, err := loadSigners(keyPaths)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	now, ok, err := bundle.CreatedFromEnv()
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	if !ok {
		now = time.Now().UTC()
	}
	opts := bundle.BuildOptions{}
	if bar := progress(stderr, spec.SourceSize()); bar != nil {
		opts.Progress = func(n int64) { bar.Add64(n) }
		defer bar.Finish()
	}
	var m *bundle.Manifest
	err = writeAtomic(*out, 0o644, func(w io.Writer) error {
		var err error
		m, err = bundle.BuildSpec(ctx, w, spec, now, keys, opts)
		return err
	})
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	var kids []string
	for _, k := range keys {
		kid, _ := bundle.KeyID(k.Public())
		kids = append(kids, kid)
	}
	fmt.Fprintf(stdout, "built %s: %s %s, %d components, %d bytes of payload, signed by %s\n",
		*out, m.Name, m.Version, len(m.Components), m.StoredSize(), strings.Join(kids, ", "))
	return nil
}

// progress returns a progress bar on stderr when it is a terminal and CI is
// not "true", else nil.
func progress(stderr io.Writer, total int64) *progressbar.ProgressBar {
	f, ok := stderr.(*os.File)
	if !ok || os.Getenv("CI") == "true" || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription("building"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
}
