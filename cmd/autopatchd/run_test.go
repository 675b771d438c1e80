package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/device"
)

// setup writes a device config on the simulated bootloader and a signed
// bundle with one rootfs image; it returns the config and bundle paths.
func setup(t *testing.T) (cfgPath, bundlePath string, payload []byte) {
	t.Helper()
	dir := t.TempDir()
	key, err := bundle.GenerateKey(bundle.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := bundle.MarshalPublicKey(key.Public())
	os.WriteFile(filepath.Join(dir, "vendor.pub"), pub, 0o644)
	os.WriteFile(filepath.Join(dir, "watchdog"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "slots.yaml"), []byte(fmt.Sprintf(`
bootloader:
  type: sim
  sim: {dir: %[1]s/sim}
slots:
  rootfs:
    a: {device: %[1]s/a.img, type: file, size: 16M}
    b: {device: %[1]s/b.img, type: file, size: 16M}
`, dir)), 0o644)
	cfgPath = filepath.Join(dir, "device.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %[1]s/data
slots: %[1]s/slots.yaml
hardware_id: board-v1
capabilities: [all]  # "run" runs inside the test process: it must keep its privileges
trust: {keys: [%[1]s/vendor.pub]}
hooks: {dir: %[1]s/hooks}
health: {dir: %[1]s/health.d, deadline: 10s}
watchdog: {device: %[1]s/watchdog, timeout: 10s}
install: {url_allowlist: [127.0.0.1]}
`, dir)), 0o644)
	payload = bytes.Repeat([]byte("new rootfs "), 20000)
	m := &bundle.Manifest{Name: "os", Version: "1.2.0", SecurityVersion: 1, Compatible: []string{"board-v1"},
		Created: time.Now().Unix(), Severity: bundle.SeverityNormal,
		Components: []bundle.Component{{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: "1.2.0", Compression: bundle.CompressionZstd}}}
	var out bytes.Buffer
	if err := bundle.Build(context.Background(), &out, m, []io.Reader{bytes.NewReader(payload)}, []crypto.Signer{key}, bundle.BuildOptions{TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	bundlePath = filepath.Join(dir, "os-1.2.0.apb")
	os.WriteFile(bundlePath, out.Bytes(), 0o644)
	return cfgPath, bundlePath, payload
}

func cli(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, &stdout, &stderr)
	return stdout.String(), err
}

func statusOf(t *testing.T, cfg string) device.Status {
	t.Helper()
	out, err := cli(t, context.Background(), "-c", cfg, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st device.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v: %s", err, out)
	}
	return st
}

func TestInstallRunCommit(t *testing.T) {
	cfg, bun, payload := setup(t)
	ctx := context.Background()
	out, err := cli(t, ctx, "-c", cfg, "install", "--dry-run", bun)
	if err != nil || !strings.Contains(out, "os 1.2.0: dry-run") || !strings.Contains(out, "rootfs slot B") {
		t.Fatalf("install --dry-run = %q, %v", out, err)
	}
	out, err = cli(t, ctx, "-c", cfg, "install", bun)
	if err != nil || !strings.Contains(out, "os 1.2.0: rebooting") {
		t.Fatalf("install = %q, %v", out, err)
	}
	// The simulated board rebooted into B on trial; the daemon finishes it.
	if st := statusOf(t, cfg); st.State != device.Rebooting || st.Booted != "B" || st.Boot.Trial != "B" {
		t.Fatalf("status after install: state %s booted %s trial %s", st.State, st.Booted, st.Boot.Trial)
	}
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := cli(t, dctx, "-c", cfg, "run"); done <- err }()
	deadline := time.Now().Add(30 * time.Second)
	for statusOf(t, cfg).State != device.Committed && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v", err)
	}
	st := statusOf(t, cfg)
	if st.State != device.Committed || st.Boot.Primary != "B" || st.SecurityVersion != 1 || st.Installed["rootfs"] != "1.2.0" {
		t.Errorf("status after run = %+v", st)
	}
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(cfg), "b.img"))
	if !bytes.Equal(b, payload) {
		t.Errorf("slot B does not hold the image")
	}
	out, err = cli(t, ctx, "-c", cfg, "install", bun)
	if err != nil || !strings.Contains(out, "already-installed") {
		t.Errorf("install again = %q, %v", out, err)
	}
	out, err = cli(t, ctx, "-c", cfg, "status")
	if err != nil || !strings.Contains(out, "installed bundle: os 1.2.0") || !strings.Contains(out, "last result:      committed") {
		t.Errorf("status = %q, %v", out, err)
	}
	if _, err := cli(t, ctx, "-c", cfg, "mark-good"); err == nil {
		t.Errorf("mark-good without a trial: want an error")
	}
	if _, err := cli(t, ctx, "-c", cfg, "rollback"); err == nil {
		t.Errorf("rollback with nothing under way: want an error")
	}
}

func TestInstallFromURL(t *testing.T) {
	cfg, bun, _ := setup(t)
	data, _ := os.ReadFile(bun)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(data) }))
	defer srv.Close()
	out, err := cli(t, context.Background(), "-c", cfg, "install", "--dry-run", srv.URL+"/os.apb")
	if err != nil || !strings.Contains(out, "dry-run") {
		t.Errorf("install from an allowed URL = %q, %v", out, err)
	}
	u, _ := url.Parse(srv.URL)
	other := "http://localhost:" + u.Port() + "/os.apb"
	if _, err := cli(t, context.Background(), "-c", cfg, "install", "--dry-run", other); err == nil || !strings.Contains(err.Error(), "url_allowlist") {
		t.Errorf("install from a host not allowed = %v, want a url_allowlist error", err)
	}
}

func TestUsage(t *testing.T) {
	cfg, _, _ := setup(t)
	for _, args := range [][]string{{}, {"-c", cfg, "frobnicate"}, {"-c", cfg, "install"}} {
		if _, err := cli(t, context.Background(), args...); err == nil {
			t.Errorf("run(%q) accepted", args)
		}
	}
	if _, err := cli(t, context.Background(), "-c", filepath.Join(t.TempDir(), "none.yaml"), "status"); err == nil {
		t.Errorf("missing config accepted")
	}
}

func TestStatusShowsLastDownload(t *testing.T) {
	st := device.Status{State: device.Committed, Download: &device.DownloadStats{
		Bundle: device.BundleInfo{Name: "gateway", Version: "2.2.0"}, Chunks: 64, Fetched: 1, FetchedBytes: 34 << 10,
		Copied: 63, CopiedBytes: 63 << 16, From: "A", Time: time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)}}
	var b strings.Builder
	writeStatus(&b, st)
	want := "last download:    gateway 2.2.0 at 2026-11-22T03:00:00Z: fetched 1 of 64 chunks (34 KiB), 63 copied from slot A\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("status:\n%s\nwant a line %q", b.String(), want)
	}
}

// `status --json` carries the last download's figures, read from the data
// dir only by the status command.
func TestStatusJSONLastDownload(t *testing.T) {
	cfg, _, _ := setup(t)
	data := filepath.Join(filepath.Dir(cfg), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	want := device.DownloadStats{Bundle: device.BundleInfo{Name: "gateway", Version: "2.2.0"}, Chunks: 64, Fetched: 1, Copied: 63, From: "A"}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "last-download.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	got := statusOf(t, cfg).Download
	if got == nil || got.Bundle != want.Bundle || got.Chunks != want.Chunks || got.Fetched != want.Fetched || got.Copied != want.Copied || got.From != want.From {
		t.Errorf("status --json download = %+v, want %+v", got, want)
	}
}
