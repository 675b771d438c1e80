package bundle

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSpecErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   string
	}{
		{"no name", func(s *Spec) { s.Name = "" }, "name is empty"},
		{"bad version", func(s *Spec) { s.Version = "1.2" }, `version "1.2" is not semver`},
		{"bad created", func(s *Spec) { s.Created = "yesterday" }, "created"},
		{"bad expires", func(s *Spec) { s.Expires = "soon" }, "expires"},
		{"expires before created", func(s *Spec) { s.Expires = "2020-01-01T00:00:00Z" }, "not after created"},
		{"bad severity", func(s *Spec) { s.Severity = "urgent" }, `severity "urgent"`},
		{"no components", func(s *Spec) { s.Components = nil }, "no components"},
		{"duplicate component", func(s *Spec) { s.Components[1].Name = "rootfs" }, `duplicate component "rootfs"`},
		{"component version", func(s *Spec) { s.Components[2].Version = "x" }, `component "conf": version "x"`},
		{"unknown kind", func(s *Spec) { s.Components[2].Kind = "blob" }, `component "conf": kind "blob"`},
		{"image without slot", func(s *Spec) { s.Components[0].Slot = "" }, `component "rootfs": an image needs a slot`},
		{"file without path", func(s *Spec) { s.Components[2].Path = "" }, `component "conf": a file needs an install path`},
		{"unknown compression", func(s *Spec) { s.Components[2].Compression = "xz" }, `component "conf": compression "xz"`},
		{"no source", func(s *Spec) { s.Components[2].Source = "" }, `component "conf": no source`},
		{"unknown dependency", func(s *Spec) { s.Components[1].Depends = []DependSpec{{Name: "libfoo"}} }, `component "app" depends on unknown "libfoo"`},
		{"bad constraint", func(s *Spec) { s.Components[1].Depends[0].Version = "not a version" }, `component "app": depends: "rootfs": bad version constraint`},
		{"unsatisfied in-bundle constraint", func(s *Spec) { s.Components[1].Depends[0].Version = ">= 2" }, `component "app" depends on rootfs >= 2, but the bundle carries rootfs 1.2.3`},
		{"self dependency", func(s *Spec) { s.Components[2].Depends = []DependSpec{{Name: "conf"}} }, `component "conf" depends on itself`},
		{"cycle", func(s *Spec) { s.Components[0].Depends = append(s.Components[0].Depends, DependSpec{Name: "app"}) }, "dependency cycle rootfs -> app -> rootfs"},
		{"bad requires", func(s *Spec) { s.Requires[0].Version = "1.x.y.z" }, `requires: "bootloader": bad version constraint`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := smallSpec(t.TempDir())
			tc.mutate(s)
			_, err := s.Manifest(time.Time{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Manifest() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSpecCreated(t *testing.T) {
	s := smallSpec(t.TempDir())
	s.Created = ""
	if _, err := s.Manifest(time.Time{}); err == nil || !strings.Contains(err.Error(), "no creation time") {
		t.Errorf("no created, no now: %v, want a no creation time error", err)
	}
	now := time.Unix(1700000000, 0)
	m, err := s.Manifest(now)
	if err != nil {
		t.Fatal(err)
	}
	if m.Created != now.Unix() || m.Expires != now.Unix()+2160*3600 {
		t.Errorf("Created, Expires = %d, %d; want %d, %d", m.Created, m.Expires, now.Unix(), now.Unix()+2160*3600)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1234")
	got, ok, err := CreatedFromEnv()
	if err != nil || !ok || got.Unix() != 1234 {
		t.Errorf("CreatedFromEnv() = %v, %v, %v; want 1234, true, nil", got, ok, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "x")
	if _, _, err := CreatedFromEnv(); err == nil {
		t.Errorf("CreatedFromEnv with x: no error")
	}
}

func TestLoadSpec(t *testing.T) {
	dir := t.TempDir()
	yaml := `name: demo
version: 1.0.0
created: 2026-01-02T03:04:05Z
components:
  - name: conf
    kind: file
    path: /etc/demo.conf
    version: 1.0.0
    source: demo.conf
`
	p := filepath.Join(dir, "bundle.yaml")
	os.WriteFile(p, []byte(yaml), 0o644)
	os.WriteFile(filepath.Join(dir, "demo.conf"), []byte("x = 1\n"), 0o644)
	s, err := LoadSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	m, err := BuildSpec(context.Background(), &out, s, time.Time{}, []crypto.Signer{vendorKey}, BuildOptions{TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if m.Severity != SeverityNormal || m.Components[0].Compression != CompressionZstd || m.Components[0].Size != 6 {
		t.Errorf("defaults: severity %s, compression %s, size %d; want normal, zstd, 6", m.Severity, m.Components[0].Compression, m.Components[0].Size)
	}
	os.WriteFile(p, []byte(yaml+"colour: red\n"), 0o644)
	if _, err := LoadSpec(p); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("unknown field: %v, want an error naming it", err)
	}
	os.Remove(filepath.Join(dir, "demo.conf"))
	os.WriteFile(p, []byte(yaml), 0o644)
	s, _ = LoadSpec(p)
	if _, err := BuildSpec(context.Background(), io.Discard, s, time.Time{}, []crypto.Signer{vendorKey}, BuildOptions{TempDir: dir}); err == nil || !strings.Contains(err.Error(), `component "conf"`) {
		t.Errorf("missing source: %v, want an error naming the component", err)
	}
}

func TestBuildDeterministic(t *testing.T) {
	dir := t.TempDir()
	a := buildSpec(t, mediumSpec(dir, "det"), vendorKey, operatorKey)
	b := buildSpec(t, mediumSpec(dir, "det"), vendorKey, operatorKey)
	if !bytes.Equal(a, b) {
		t.Errorf("two builds of the same spec differ")
	}
	var c bytes.Buffer
	s := mediumSpec(dir, "det")
	if _, err := BuildSpec(context.Background(), &c, s, time.Time{}, []crypto.Signer{vendorKey, operatorKey}, BuildOptions{TempDir: dir, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, c.Bytes()) {
		t.Errorf("build with one worker differs from the parallel build")
	}
}

func TestBuildErrors(t *testing.T) {
	m := benchManifest(CompressionNone)
	if err := Build(context.Background(), io.Discard, m, nil, []crypto.Signer{vendorKey}, BuildOptions{}); err == nil {
		t.Errorf("Build without payloads: no error")
	}
	if err := Build(context.Background(), io.Discard, m, []io.Reader{strings.NewReader("x")}, nil, BuildOptions{}); err == nil {
		t.Errorf("Build without keys: no error")
	}
	if err := Build(context.Background(), io.Discard, m, []io.Reader{strings.NewReader("x")}, []crypto.Signer{vendorKey, vendorKey}, BuildOptions{}); err == nil {
		t.Errorf("Build with the same key twice: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Build(ctx, io.Discard, m, []io.Reader{strings.NewReader("x")}, []crypto.Signer{vendorKey}, BuildOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Build with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestEmptyComponent(t *testing.T) {
	m := benchManifest(CompressionZstd)
	var out bytes.Buffer
	if err := Build(context.Background(), &out, m, []io.Reader{strings.NewReader("")}, []crypto.Signer{vendorKey}, BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(out.Bytes(), trustOf(t, vendorKey))
	if err != nil {
		t.Fatal(err)
	}
	if data, ok := got["rootfs"]; !ok || len(data) != 0 {
		t.Errorf("empty component read back as %d bytes (present %v)", len(data), ok)
	}
}

func TestCountersign(t *testing.T) {
	b := buildSpec(t, mediumSpec(t.TempDir(), "cs"), vendorKey)
	var out bytes.Buffer
	kid, err := Countersign(&out, bytes.NewReader(b), operatorKey)
	if err != nil {
		t.Fatal(err)
	}
	if kid != pubOf(t, operatorKey).ID {
		t.Errorf("Countersign returned key id %s, want %s", kid, pubOf(t, operatorKey).ID)
	}
	_, _, pa := parts(t, b)
	_, _, pb := parts(t, out.Bytes())
	if !bytes.Equal(pa, pb) {
		t.Errorf("countersigning changed the payload")
	}
	both := &Trust{Keys: trustOf(t, vendorKey, operatorKey).Keys, Threshold: 2}
	if _, err := readAll(out.Bytes(), both); err != nil {
		t.Errorf("countersigned bundle with threshold 2: %v", err)
	}
	// Same as building with both keys from the start.
	if direct := buildSpec(t, mediumSpec(t.TempDir(), "cs"), vendorKey, operatorKey); !bytes.Equal(direct, out.Bytes()) {
		t.Errorf("countersigned bundle differs from one built with both keys")
	}
	if _, err := Countersign(io.Discard, bytes.NewReader(out.Bytes()), operatorKey); err == nil || !strings.Contains(err.Error(), "already signed") {
		t.Errorf("countersigning twice with the same key: %v, want already signed", err)
	}
	if _, err := Countersign(io.Discard, bytes.NewReader(b[:100]), operatorKey); !errors.Is(err, ErrTruncated) {
		t.Errorf("countersigning a truncated bundle: %v, want ErrTruncated", err)
	}
}

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestBuildPayloadSources(t *testing.T) {
	data := append(randBytes("src", 700<<10), textBytes("src", 500<<10)...)
	build := func(p io.Reader, spoolMem int64) []byte {
		var out bytes.Buffer
		m := benchManifest(CompressionZstd)
		if err := Build(context.Background(), &out, m, []io.Reader{p}, []crypto.Signer{vendorKey}, BuildOptions{TempDir: t.TempDir(), SpoolMemory: spoolMem}); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	want := build(bytes.NewReader(data), 0)
	offset := bytes.NewReader(append([]byte("skip"), data...))
	offset.Seek(4, io.SeekStart)
	for name, got := range map[string][]byte{
		"plain reader":            build(onlyReader{bytes.NewReader(data)}, 0),
		"spool spills to file":    build(onlyReader{bytes.NewReader(data)}, 1024),
		"reader at an offset":     build(offset, 1024),
		"re-readable, tiny spool": build(bytes.NewReader(data), 1),
	} {
		if !bytes.Equal(got, want) {
			t.Errorf("%s: bundle differs from the one built from a bytes.Reader", name)
		}
	}
	got, err := readAll(want, trustOf(t, vendorKey))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got["rootfs"], data) {
		t.Errorf("payload does not read back")
	}
}

func TestBuildSourceChanged(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	os.WriteFile(p, randBytes("changed", 300<<10), 0o644)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := benchManifest(CompressionNone)
	w := &changeOnWrite{path: p}
	err = Build(context.Background(), w, m, []io.Reader{f}, []crypto.Signer{vendorKey}, BuildOptions{TempDir: dir})
	if err == nil || !strings.Contains(err.Error(), "changed during the build") {
		t.Errorf("Build with a source changing under it: %v, want a changed error", err)
	}
}

// changeOnWrite rewrites the source file when the header is written, i.e.
// between the two passes.
type changeOnWrite struct {
	path    string
	changed bool
}

func (c *changeOnWrite) Write(p []byte) (int, error) {
	if !c.changed {
		c.changed = true
		os.WriteFile(c.path, randBytes("other", 200<<10), 0o644)
	}
	return len(p), nil
}
