//go:build ignore

// Genpayloads writes the example payloads bundle.yaml refers to:
//
//	go run examples/demo/genpayloads.go [-size MiB] [-edit] [DIR]
//
// DIR defaults to examples/demo/payloads. The output is deterministic. The
// image mixes incompressible and compressible regions like a real
// filesystem; -edit changes a few bytes in its middle, to show that only the
// chunks around an edit change between two builds.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

func main() {
	size := flag.Int("size", 8, "rootfs image size in MiB")
	edit := flag.Bool("edit", false, "change a few bytes in the middle of the image")
	flag.Parse()
	dir := filepath.Join("examples", "demo", "payloads")
	if flag.NArg() > 0 {
		dir = flag.Arg(0)
	}
	if err := run(dir, *size, *edit); err != nil {
		fmt.Fprintln(os.Stderr, "genpayloads:", err)
		os.Exit(1)
	}
}

func run(dir string, sizeMiB int, edit bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// rootfs.img: alternating 1 MiB regions of random bytes (binaries,
	// compressed files), text (configuration, scripts) and zeros (free space).
	rng := rand.NewChaCha8([32]byte{'d', 'e', 'm', 'o'})
	img := make([]byte, sizeMiB<<20)
	for off := 0; off < len(img); off += 1 << 20 {
		region := img[off:min(off+1<<20, len(img))]
		switch (off >> 20) % 3 {
		case 0:
			rng.Read(region)
		case 1:
			line := []byte("ExecStart=/opt/gateway/bin/gateway --config /etc/gateway/gateway.conf\n")
			for i := range region {
				region[i] = line[i%len(line)]
			}
		}
	}
	if edit {
		copy(img[len(img)/2:], "edited")
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs.img"), img, 0o644); err != nil {
		return err
	}

	// gateway-app.tar: a small package.
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	mtime := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	files := []struct {
		name string
		mode int64
		body string
	}{
		{"bin/gateway", 0o755, "#!/bin/sh\nexec echo gateway 1.4.2 \"$@\"\n"},
		{"share/gateway/README", 0o644, "Gateway 1.4.2\n"},
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "gateway-app.tar"), tb.Bytes(), 0o644); err != nil {
		return err
	}

	conf := "listen = 0.0.0.0:8443\nupstream = mqtts://hub.example.net\n"
	return os.WriteFile(filepath.Join(dir, "gateway.conf"), []byte(conf), 0o644)
}
