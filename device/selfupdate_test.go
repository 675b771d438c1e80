package device

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeDaemon is a stand-in autopatchd binary: its self-check prints what
// it is told to.
func fakeDaemon(version, selfCheck string) []byte {
	return []byte("#!/bin/sh\n# autopatchd " + version + "\nfor a; do [ \"$a\" = self-check ] && { echo " + selfCheck + "; exit 0; }; done\nexit 2\n")
}

func TestSelfUpdate(t *testing.T) {
	r := newRig(t)
	r.cfg.SelfUpdate.Binary = "/usr/bin/autopatchd"
	r.cfg.SelfUpdate.Deadline = Duration(10 * time.Second)
	bin := filepath.Join(r.cfg.FileRoot, "usr", "bin", "autopatchd")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	if err := os.WriteFile(bin, fakeDaemon("1.0.0", "ok"), 0o755); err != nil {
		t.Fatal(err)
	}
	exe := func() (string, error) { return bin, nil }
	daemon := func() *Engine {
		e := r.engine()
		e.o.Executable = exe
		e.exeAtStart, _ = os.Stat(bin)
		e.selfAtStart = true
		return e
	}

	// A new binary that fails its self-check is never switched to.
	bad := r.build(spec{name: "agent", version: "1.1.0", comps: []comp{file("autopatchd", "1.1.0", "/usr/bin/autopatchd", fakeDaemon("1.1.0", "broken"))}})
	e := daemon()
	if err := e.ConfirmBoot(context.Background()); err != nil { // as the daemon at boot
		t.Fatal(err)
	}
	before := snapshot(t, r)
	if _, err := r.install(e, bad, InstallOptions{}); !errors.Is(err, ErrSelfCheck) {
		t.Fatalf("Install of a broken binary = %v, want ErrSelfCheck", err)
	}
	if snapshot(t, r) != before {
		t.Errorf("a failed self-check changed the device")
	}

	// A good one is switched atomically; the old one is kept until confirmed.
	good := r.build(spec{name: "agent", version: "1.2.0", comps: []comp{file("autopatchd", "1.2.0", "/usr/bin/autopatchd", fakeDaemon("1.2.0", "ok"))}})
	res, err := r.install(e, good, InstallOptions{})
	if err != nil || res.Status != Committed.String() {
		t.Fatalf("Install = %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(bin); string(b) != string(fakeDaemon("1.2.0", "ok")) {
		t.Errorf("binary not switched")
	}
	if b, _ := os.ReadFile(bin + oldExt); string(b) != string(fakeDaemon("1.0.0", "ok")) {
		t.Errorf("old binary not kept beside the new one")
	}
	if !e.BinaryReplaced() {
		t.Errorf("BinaryReplaced = false, want true: the daemon must re-execute")
	}
	// The new process comes up in time and confirms.
	if err := daemon().ConfirmSelfUpdate(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin + oldExt); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old binary still there after the confirmation")
	}

	// Next update: the new process comes up too late; the old one is restored.
	newer := r.build(spec{name: "agent", version: "1.3.0", comps: []comp{file("autopatchd", "1.3.0", "/usr/bin/autopatchd", fakeDaemon("1.3.0", "ok"))}})
	if res, err := r.install(daemon(), newer, InstallOptions{}); err != nil || res.Status != Committed.String() {
		t.Fatalf("Install 1.3.0 = %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(bin); string(b) != string(fakeDaemon("1.3.0", "ok")) {
		t.Errorf("after 1.3.0: %q", b)
	}
	if false {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(bin + oldExt); string(b) != string(fakeDaemon("1.2.0", "ok")) {
		t.Errorf("old copy before the late confirmation = %q", b)
	}
	r.now = r.now.Add(time.Minute)
	if err := daemon().ConfirmSelfUpdate(); !errors.Is(err, ErrRestart) {
		t.Errorf("late confirmation = %v, want ErrRestart", err)
	}
	if b, _ := os.ReadFile(bin); string(b) != string(fakeDaemon("1.2.0", "ok")) {
		t.Errorf("binary after a late confirmation = %q, want 1.2.0 restored", b)
	}
	if err := daemon().ConfirmSelfUpdate(); err != nil {
		t.Errorf("ConfirmSelfUpdate without a marker = %v", err)
	}
}
