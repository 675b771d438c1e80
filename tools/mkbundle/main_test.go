package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mk runs mkbundle with args and returns stdout, stderr and the error.
func mk(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func mustMk(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := mk(t, args...)
	if err != nil {
		t.Fatalf("mkbundle %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// workdir holds two keys, a spec and its payloads.
func workdir(t *testing.T) string {
	t.Helper()
	t.Setenv("CI", "true")
	dir := t.TempDir()
	mustMk(t, "keygen", "--out", filepath.Join(dir, "vendor"))
	mustMk(t, "keygen", "--alg", "p256", "--out", filepath.Join(dir, "operator"))
	os.WriteFile(filepath.Join(dir, "rootfs.img"), bytes.Repeat([]byte("rootfs image "), 40000), 0o644)
	os.WriteFile(filepath.Join(dir, "app.tar"), bytes.Repeat([]byte("app "), 5000), 0o644)
	os.WriteFile(filepath.Join(dir, "app.conf"), []byte("mode = on\n"), 0o644)
	spec := `name: demo
version: 1.0.0
security_version: 2
compatible: [qemu-armv7]
created: 2026-01-02T03:04:05Z
severity: security
requires: [{name: bootloader, version: ">= 2023.1"}]
components:
  - {name: rootfs, kind: image, slot: rootfs, version: 1.0.0, source: rootfs.img}
  - {name: app, kind: package, path: /opt/app, version: 0.1.0, source: app.tar, depends: [{name: rootfs, version: "^1"}]}
  - {name: conf, kind: file, path: /etc/app.conf, version: 1.0.0, compression: none, source: app.conf}
`
	os.WriteFile(filepath.Join(dir, "bundle.yaml"), []byte(spec), 0o644)
	return dir
}

func TestKeygen(t *testing.T) {
	dir := workdir(t)
	fi, err := os.Stat(filepath.Join(dir, "vendor.key"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("vendor.key mode = %o, want 600", got)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "operator.pub"))
	if !bytes.HasPrefix(pub, []byte("-----BEGIN PUBLIC KEY-----")) {
		t.Errorf("operator.pub is not a PEM public key: %q", pub)
	}
	if _, _, err := mk(t, "keygen", "--out", filepath.Join(dir, "vendor")); err == nil {
		t.Errorf("keygen over an existing key: no error")
	}
	if _, _, err := mk(t, "keygen", "--alg", "rsa", "--out", filepath.Join(dir, "x")); err == nil {
		t.Errorf("keygen --alg rsa: no error")
	}
}

func TestWalkthrough(t *testing.T) {
	dir := workdir(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	out := mustMk(t, "build", "-f", p("bundle.yaml"), "-k", p("vendor.key"), "-o", p("demo.apb"))
	if !strings.HasPrefix(out, "built ") {
		t.Errorf("build printed %q", out)
	}

	out = mustMk(t, "inspect", p("demo.apb"))
	for _, want := range []string{"bundle demo 1.0.0", "rootfs", "app", "rootfs ^1", "UNVERIFIED", "requires: bootloader >= 2023.1"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	var v view
	if err := json.Unmarshal([]byte(mustMk(t, "inspect", "--json", "--chunks", p("demo.apb"))), &v); err != nil {
		t.Fatal(err)
	}
	if v.Verified || v.Name != "demo" || len(v.Components) != 3 || len(v.Signatures) != 1 || len(v.Components[0].Chunks) != v.Components[0].ChunkCount {
		t.Errorf("inspect --json = %+v", v)
	}

	out = mustMk(t, "verify", "--trust", p("vendor.pub"), p("demo.apb"))
	if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "OK ") {
		t.Errorf("verify printed %q, want one OK line", out)
	}

	// Countersign, with verification first, and require both.
	mustMk(t, "sign", "-k", p("operator.key"), "--trust", p("vendor.pub"), p("demo.apb"), "-o", p("demo2.apb"))
	out = mustMk(t, "verify", "--trust", p("vendor.pub"), "--trust", p("operator.pub"), "--threshold", "2", p("demo2.apb"))
	if !strings.HasPrefix(out, "OK ") {
		t.Errorf("verify of the countersigned bundle printed %q", out)
	}
	if _, _, err := mk(t, "sign", "-k", p("operator.key"), "--trust", p("operator.pub"), p("demo.apb"), "-o", p("x.apb")); err == nil {
		t.Errorf("sign --trust with an untrusting key: no error")
	}

	// Reproducible: the same spec, key and creation time give the same file.
	mustMk(t, "build", "-f", p("bundle.yaml"), "-k", p("vendor.key"), "-o", p("again.apb"))
	a, _ := os.ReadFile(p("demo.apb"))
	b, _ := os.ReadFile(p("again.apb"))
	if !bytes.Equal(a, b) {
		t.Errorf("two builds differ")
	}
}

func TestVerifyFailures(t *testing.T) {
	dir := workdir(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	mustMk(t, "build", "-f", p("bundle.yaml"), "-k", p("vendor.key"), "-o", p("demo.apb"))
	good, _ := os.ReadFile(p("demo.apb"))
	write := func(name string, b []byte) string { os.WriteFile(p(name), b, 0o644); return p(name) }
	flipped := bytes.Clone(good)
	flipped[len(flipped)-20] ^= 1
	vendorID := func() string {
		var v view
		json.Unmarshal([]byte(mustMk(t, "inspect", "--json", p("demo.apb"))), &v)
		return v.Signatures[0].KeyID
	}()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"payload flipped", []string{"--trust", p("vendor.pub"), write("flipped.apb", flipped)}, "chunk check failed"},
		{"truncated", []string{"--trust", p("vendor.pub"), write("short.apb", good[:len(good)-5])}, "file truncated"},
		{"garbage appended", []string{"--trust", p("vendor.pub"), write("long.apb", append(bytes.Clone(good), "junk"...))}, "malformed bundle"},
		{"untrusted key", []string{"--trust", p("operator.pub"), p("demo.apb")}, "no trusted signature"},
		{"revoked", []string{"--trust", p("vendor.pub"), "--revoked", vendorID, p("demo.apb")}, "revoked key"},
		{"threshold", []string{"--trust", p("vendor.pub"), "--trust", p("operator.pub"), "--threshold", "2", p("demo.apb")}, "signature threshold not met"},
		{"not a bundle", []string{"--trust", p("vendor.pub"), p("bundle.yaml")}, "malformed bundle"},
		{"missing file", []string{"--trust", p("vendor.pub"), p("nope.apb")}, "no such file"},
		{"no trust", []string{p("demo.apb")}, "want --trust"},
		{"bad trust file", []string{"--trust", p("vendor.key"), p("demo.apb")}, "PUBLIC KEY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := mk(t, append([]string{"verify"}, tc.args...)...)
			if err == nil {
				t.Fatalf("verify succeeded: %q", out)
			}
			if strings.Contains(out, "OK") {
				t.Errorf("verify printed %q on failure", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	dir := workdir(t)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"build", "-f", filepath.Join(dir, "bundle.yaml")},
		{"build", "-f", filepath.Join(dir, "missing.yaml"), "-k", filepath.Join(dir, "vendor.key"), "-o", filepath.Join(dir, "x.apb")},
		{"build", "-f", filepath.Join(dir, "bundle.yaml"), "-k", filepath.Join(dir, "vendor.pub"), "-o", filepath.Join(dir, "x.apb")},
		{"sign", "-k", filepath.Join(dir, "vendor.key")},
		{"inspect"},
		{"inspect", filepath.Join(dir, "bundle.yaml")},
		{"keygen"},
	} {
		if _, _, err := mk(t, args...); err == nil {
			t.Errorf("mkbundle %v: no error", args)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.apb")); !os.IsNotExist(err) {
		t.Errorf("a failed build left x.apb behind")
	}
	if out, _, err := mk(t, "help"); err != nil || !strings.Contains(out, "mkbundle verify") {
		t.Errorf("help = %q, %v", out, err)
	}
}
