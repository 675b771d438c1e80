package device

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots/sim"
)

// feeder plays the hub's part for a Download: it reads stored chunks from
// a bundle file, verifies them as the Fetcher does and writes them into the
// Download's sinks.
type feeder struct {
	t      testing.TB
	f      *os.File
	m      *bundle.Manifest
	signed []byte
	layout [][]bundle.Extent
}

func newFeeder(t testing.TB, path string, trust *bundle.Trust) *feeder {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	br, err := bundle.Open(f, trust)
	if err != nil {
		t.Fatal(err)
	}
	return &feeder{t: t, f: f, m: br.Manifest(), signed: br.SignedManifest(), layout: bundle.Layout(br.Manifest(), br.DataOffset())}
}

// feed writes every chunk of every component the Download does not have
// yet, stopping after limit chunks per component (-1: all); it returns how
// many it wrote.
func (fd *feeder) feed(d *Download, limit int) int {
	fd.t.Helper()
	n := 0
	for _, ci := range d.Components() {
		c := &d.Manifest().Components[ci]
		k := 0
		for i := range c.Chunks {
			if d.Done(ci, i) {
				continue
			}
			if limit >= 0 && k >= limit {
				break
			}
			e := fd.layout[ci][i]
			stored := make([]byte, e.Length)
			if _, err := fd.f.ReadAt(stored, e.Offset); err != nil {
				fd.t.Fatal(err)
			}
			plain, err := c.VerifyChunk(i, stored)
			if err != nil {
				fd.t.Fatal(err)
			}
			if _, err := d.Sink(ci).WriteAt(plain, int64(c.Chunks[i].Offset)); err != nil {
				fd.t.Fatal(err)
			}
			if err := d.MarkDone(ci, i); err != nil {
				fd.t.Fatal(err)
			}
			k++
			n++
		}
	}
	return n
}

func chunkCount(m *bundle.Manifest) int {
	n := 0
	for _, c := range m.Components {
		n += len(c.Chunks)
	}
	return n
}

// TestDownloadResume: a download of images, packages and files cut halfway
// (Close, a new engine as after a daemon restart, and a reboot) resumes with
// only the missing chunks, installs in dependency order and commits.
func TestDownloadResume(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	dep := func(n string) bundle.Dependency { return bundle.Dependency{Name: n, Constraint: ">= 1"} }
	img := randomBytes(7, 3<<20)
	p := r.build(spec{version: "2.0.0", security: 1, comps: []comp{
		file("config", "1.0.0", "/etc/app.conf", []byte("x=1\n")).dependsOn(dep("app")),
		pkg("app", "1.2.0", map[string]string{"bin/app": "v1.2"}).dependsOn(dep("rootfs")),
		image("rootfs", "1.0.0", img),
	}})
	fd := newFeeder(t, p, r.trust)
	total := chunkCount(fd.m)

	d, err := r.engine().Prepare(ctx, fd.signed, DownloadOptions{Offer: "dep-1"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Resumed() || d.AlreadyInstalled() {
		t.Fatalf("fresh download: resumed %v, already installed %v", d.Resumed(), d.AlreadyInstalled())
	}
	first := fd.feed(d, 20)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if st := r.state(r.engine()); st.State != Downloading || st.Offer != "dep-1" {
		t.Fatalf("state %s offer %q, want downloading dep-1", st.State, st.Offer)
	}
	if _, err := r.install(r.engine(), p, InstallOptions{}); !errors.Is(err, ErrBusy) {
		t.Errorf("Install during a download: %v, want ErrBusy", err)
	}

	// The board reboots: nothing changes for the download.
	e, status := r.reboot(sim.Default)
	if status != Downloading.String() {
		t.Fatalf("Resume after a reboot = %q, want downloading", status)
	}
	d, err = e.Prepare(ctx, fd.signed, DownloadOptions{Offer: "dep-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Resumed() {
		t.Error("second Prepare did not resume")
	}
	rest := fd.feed(d, -1)
	if first+rest != total {
		t.Errorf("fed %d + %d chunks, the bundle has %d: resumed download asked again for some", first, rest, total)
	}
	out, err := d.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != StatusRebooting {
		t.Errorf("Finish = %s, want rebooting", out.Status)
	}
	if want := []string{"rootfs", "app", "config"}; !slices.Equal(r.order, want) {
		t.Errorf("install order %v, want %v", r.order, want)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.DataDir, downloadDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("download dir left after Finish: %v", err)
	}
	e, status = r.reboot(sim.Default)
	if status != Committed.String() {
		t.Fatalf("after the trial reboot: %s, want committed", status)
	}
	if !bytes.Equal(r.slotBytes("b"), img) {
		t.Error("slot B does not hold the image")
	}
	if b, _ := os.ReadFile(filepath.Join(r.cfg.FileRoot, "etc", "app.conf")); string(b) != "x=1\n" {
		t.Errorf("app.conf = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(r.cfg.DataDir, "packages", "app", "current", "bin", "app")); string(b) != "v1.2" {
		t.Errorf("app current = %q, want v1.2", b)
	}
	if rec := r.state(e); rec.Offer != "" || rec.Chunks["rootfs/B"].Version != "1.0.0" {
		t.Errorf("after commit: offer %q, chunk index of B %q", rec.Offer, rec.Chunks["rootfs/B"].Version)
	}

	// The same bundle again: already installed, nothing to fetch.
	d, err = e.Prepare(ctx, fd.signed, DownloadOptions{Offer: "dep-2"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := d.Finish(ctx); err != nil || out.Status != StatusAlreadyInstalled {
		t.Errorf("Finish of the installed bundle = %s, %v; want already-installed", out.Status, err)
	}
}

// TestDownloadRefused: what Install refuses, Prepare refuses before the
// state or any slot changes.
func TestDownloadRefused(t *testing.T) {
	other, err := bundle.GenerateKey(bundle.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	img := []comp{image("rootfs", "1.0.0", randomBytes(3, 64<<10))}
	tests := []struct {
		name string
		spec spec
		want error
	}{
		{"unknown key", spec{version: "1.0.0", security: 1, comps: img, keys: []crypto.Signer{other}}, bundle.ErrUnknownKey},
		{"wrong hardware", spec{version: "1.0.0", security: 1, comps: img, hw: []string{"other-board"}}, ErrIncompatible},
		{"expired", spec{version: "1.0.0", security: 1, comps: img, expires: 1_800_000_000 - 60}, ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			signed := signedOf(t, r.build(tt.spec))
			before, _ := os.ReadFile(filepath.Join(r.cfg.DataDir, "state.json"))
			_, err := r.engine().Prepare(context.Background(), signed, DownloadOptions{Offer: "dep-1"})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Prepare: %v, want %v", err, tt.want)
			}
			after, _ := os.ReadFile(filepath.Join(r.cfg.DataDir, "state.json"))
			if !bytes.Equal(before, after) {
				t.Error("state.json changed")
			}
			if _, err := os.Stat(filepath.Join(r.dir, "rootfs-b.img")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("slot B touched: %v", err)
			}
		})
	}
}

// signedOf returns the signed manifest of a bundle file without verifying it.
func signedOf(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Header: magic (8), format version (2), flags (2), signed manifest length (4).
	n := int(binary.BigEndian.Uint32(b[12:16]))
	return b[bundle.HeaderSize : bundle.HeaderSize+n]
}

// TestDownloadCorrupted: a slot that does not read back as the manifest says
// abandons the update at Finish and cleans up; a cancel abandons a download.
func TestDownloadCorrupted(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	p := r.build(spec{version: "1.0.0", security: 1, comps: []comp{image("rootfs", "1.0.0", randomBytes(9, 1<<20))}})
	fd := newFeeder(t, p, r.trust)
	e := r.engine()
	d, err := e.Prepare(ctx, fd.signed, DownloadOptions{Offer: "dep-1"})
	if err != nil {
		t.Fatal(err)
	}
	fd.feed(d, -1)
	if _, err := d.Sink(0).WriteAt([]byte("rot"), 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Finish(ctx); !errors.Is(err, ErrVerify) {
		t.Fatalf("Finish of a corrupted slot: %v, want ErrVerify", err)
	}
	rec := r.state(e)
	if rec.State != Abandoned || rec.Bundle != nil || rec.Last == nil || rec.Last.State != Abandoned {
		t.Errorf("after a failed Finish: state %s, last %+v", rec.State, rec.Last)
	}
	if bs, _ := r.boot.State(); bs.Pending != "" {
		t.Errorf("bootloader told to try %s", bs.Pending)
	}

	d, err = e.Prepare(ctx, fd.signed, DownloadOptions{Offer: "dep-2"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Resumed() {
		t.Error("a download after an abandoned one resumed it")
	}
	fd.feed(d, 3)
	d.Close()
	if err := e.CancelDownload("dep-1", "x"); !errors.Is(err, ErrNoDownload) {
		t.Errorf("cancel of another offer: %v, want ErrNoDownload", err)
	}
	if err := e.CancelDownload("dep-2", "cancelled by the hub"); err != nil {
		t.Fatal(err)
	}
	if rec := r.state(e); rec.State != Abandoned || rec.Last.Reason != "cancelled by the hub" {
		t.Errorf("after cancel: %s %q", rec.State, rec.Last.Reason)
	}
}

// TestDownloadCut: a download stopped without Close or Sync (a power cut)
// resumes from the last persisted bitmap, which never claims more than was
// fsynced, and completes.
func TestDownloadCut(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	img := randomBytes(11, 8<<20)
	p := r.build(spec{version: "1.0.0", security: 1, comps: []comp{image("rootfs", "1.0.0", img)}})
	fd := newFeeder(t, p, r.trust)
	total := len(fd.m.Components[0].Chunks)
	if total < markFlushEvery+20 {
		t.Fatalf("the image has %d chunks; the test needs more than %d", total, markFlushEvery+20)
	}
	d, err := r.engine().Prepare(ctx, fd.signed, DownloadOptions{Offer: "dep-1"})
	if err != nil {
		t.Fatal(err)
	}
	fed := fd.feed(d, markFlushEvery+20) // the last 20 marks are never persisted
	d2, err := r.engine().Prepare(ctx, fd.signed, DownloadOptions{Offer: "dep-1"})
	if err != nil {
		t.Fatal(err)
	}
	if done, _ := d2.Count(0); done != markFlushEvery {
		t.Errorf("after the cut %d chunks count as done, want the %d persisted (of %d fed)", done, markFlushEvery, fed)
	}
	if rest := fd.feed(d2, -1); rest != total-markFlushEvery {
		t.Errorf("resume fed %d chunks, want %d", rest, total-markFlushEvery)
	}
	if out, err := d2.Finish(ctx); err != nil || out.Status != StatusRebooting {
		t.Fatalf("Finish = %s, %v", out.Status, err)
	}
	if _, status := r.reboot(sim.Default); status != Committed.String() {
		t.Fatalf("after the reboot: %s", status)
	}
	if !bytes.Equal(r.slotBytes("b"), img) {
		t.Error("slot B does not hold the image")
	}
}

// TestDownloadCountsCopiesPerComponent: a file whose only chunk equals a
// chunk the image copies from the active slot is fetched (files have no
// local source), and the stats count it as fetched, not copied.
func TestDownloadCountsCopiesPerComponent(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	img := randomBytes(21, 1<<20)
	p1 := r.build(spec{version: "1.1.0", security: 1, comps: []comp{image("rootfs", "1.1.0", img)}})
	if _, err := r.install(r.engine(), p1, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	e, status := r.reboot(sim.Default)
	if status != Committed.String() || r.boot.Booted() != "B" {
		t.Fatalf("first update: %q on %s", status, r.boot.Booted())
	}

	first, err := bundle.NewChunker(bytes.NewReader(img)).Next()
	if err != nil {
		t.Fatal(err)
	}
	seed := append([]byte(nil), first...)
	img2 := append([]byte(nil), img...)
	copy(img2[len(img2)/2:], "a change in the middle of the image")
	p2 := r.build(spec{version: "1.2.0", security: 1, comps: []comp{
		image("rootfs", "1.2.0", img2),
		file("seed", "1.0.0", "/etc/seed", seed).dependsOn(bundle.Dependency{Name: "rootfs", Constraint: ">= 1"}),
	}})
	fd := newFeeder(t, p2, r.trust)
	d, err := e.Prepare(ctx, fd.signed, DownloadOptions{Offer: "dep-2"})
	if err != nil {
		t.Fatal(err)
	}
	if comps := d.Components(); len(comps) != 2 || d.Manifest().Components[comps[0]].Kind != bundle.KindImage {
		t.Fatalf("components %v, want the image first, then the file", comps)
	}

	// As the Fetcher does: copy what the active slot holds, fetch the rest.
	copied := map[[32]byte]bool{}
	nCopied := 0
	for _, ci := range d.Components() {
		l := d.Local(ci)
		if l == nil {
			continue
		}
		c := &d.Manifest().Components[ci]
		for i, ch := range c.Chunks {
			buf := make([]byte, ch.Length)
			ok, err := l.ReadChunk(ch.SHA256, buf)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				continue
			}
			if _, err := d.Sink(ci).WriteAt(buf, int64(ch.Offset)); err != nil {
				t.Fatal(err)
			}
			if err := d.MarkDone(ci, i); err != nil {
				t.Fatal(err)
			}
			copied[[32]byte(ch.SHA256)] = true
			nCopied++
		}
	}
	var fileComp *bundle.Component
	for _, ci := range d.Components() {
		if c := &d.Manifest().Components[ci]; c.Kind == bundle.KindFile {
			fileComp = c
			if d.Local(ci) != nil {
				t.Errorf("file component %q has a local source", c.Name)
			}
		}
	}
	if fileComp == nil || len(fileComp.Chunks) != 1 || !copied[[32]byte(fileComp.Chunks[0].SHA256)] {
		t.Fatal("the file's chunk is not one the image copied: the test proves nothing")
	}
	fetched := fd.feed(d, -1)

	st := d.Stats()
	if st.Copied != nCopied || st.Fetched != fetched {
		t.Errorf("stats: %d copied, %d fetched; want %d copied, %d fetched (the file's chunk among them)", st.Copied, st.Fetched, nCopied, fetched)
	}
	if st.Copied+st.Fetched != st.Chunks || st.From != "B" {
		t.Errorf("stats %+v: copied + fetched != chunks, or not from B", st)
	}
	var copiedBytes uint64
	for _, ch := range d.Manifest().Components[d.Components()[0]].Chunks {
		if copied[[32]byte(ch.SHA256)] {
			copiedBytes += uint64(ch.Length)
		}
	}
	if st.CopiedBytes != copiedBytes {
		t.Errorf("copied bytes %d, want %d (the image's copied chunks only)", st.CopiedBytes, copiedBytes)
	}
	if out, err := d.Finish(ctx); err != nil || out.Status != StatusRebooting {
		t.Fatalf("Finish = %s, %v", out.Status, err)
	}
	if last := e.LastDownload(); last == nil || last.Copied != st.Copied || last.Fetched != st.Fetched {
		t.Errorf("LastDownload = %+v, want the stats %+v", last, st)
	}
}
