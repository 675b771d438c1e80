package device

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots"
	"github.com/autopatcher/autopatcher/slots/sim"
)

func writeHook(t *testing.T, dir, name, script string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestInstallTrialCommit(t *testing.T) {
	r := newRig(t)
	out := filepath.Join(r.dir, "hook.log")
	writeHook(t, filepath.Join(r.cfg.Hooks.Dir, HookPostCommit), "10-log", `echo "$AP_HOOK $AP_BUNDLE $AP_VERSION $AP_SLOT $AP_STATE" >> `+out)
	writeHook(t, filepath.Join(r.cfg.Hooks.Dir, HookPreReboot), "10-log", `echo "$AP_HOOK $AP_SLOT" >> `+out)
	img := randomBytes(1, 300<<10)
	p := r.build(spec{version: "1.1.0", security: 2, comps: []comp{image("rootfs", "1.1.0", img)}})
	e := r.engine()
	res, err := r.install(e, p, InstallOptions{})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if res.Status != StatusRebooting || res.State != Rebooting {
		t.Errorf("Install = %s/%s, want %s/%s", res.Status, res.State, StatusRebooting, Rebooting)
	}
	if r.reboots != 1 {
		t.Errorf("reboots = %d, want 1", r.reboots)
	}
	bs, _ := r.boot.State()
	if bs.Pending != "B" {
		t.Errorf("Pending = %q, want B", bs.Pending)
	}
	if !bytes.Equal(r.slotBytes("B")[:len(img)], img) {
		t.Errorf("slot B does not hold the image")
	}

	e, status := r.reboot(sim.Default)
	if status != Committed.String() {
		t.Fatalf("after reboot: status %q, want committed", status)
	}
	rec := r.state(e)
	if rec.State != Committed || rec.Last == nil || rec.Last.State != Committed {
		t.Errorf("state %s last %+v, want committed", rec.State, rec.Last)
	}
	if rec.SecurityVersion != 2 {
		t.Errorf("SecurityVersion = %d, want 2", rec.SecurityVersion)
	}
	if got := rec.Installed["rootfs"]; got != "1.1.0" {
		t.Errorf("Installed[rootfs] = %q, want 1.1.0", got)
	}
	if ci, ok := rec.Chunks["rootfs/B"]; !ok || ci.Size != uint64(len(img)) || len(ci.Chunks) == 0 {
		t.Errorf("chunk index of rootfs/B = %+v, %v", ci, ok)
	}
	bs, _ = r.boot.State()
	if bs.Primary != "B" || bs.Trial != "" {
		t.Errorf("boot state %+v, want primary B, no trial", bs)
	}
	wd, _ := os.ReadFile(r.cfg.Watchdog.Device)
	if !bytes.HasPrefix(wd, []byte("1")) || !bytes.HasSuffix(wd, []byte("V")) {
		t.Errorf("watchdog saw %q, want pets then the magic close", wd)
	}
	log, _ := os.ReadFile(out)
	want := "pre-reboot.d B\npost-commit.d os 1.1.0 B committed\n"
	if string(log) != want {
		t.Errorf("hooks ran:\n%s\nwant:\n%s", log, want)
	}
	// The same bundle again is a no-op.
	res, err = r.install(e, p, InstallOptions{})
	if err != nil || res.Status != StatusAlreadyInstalled {
		t.Errorf("second Install = %q, %v; want %q", res.Status, err, StatusAlreadyInstalled)
	}
	st, err := e.Status()
	if err != nil || st.Booted != "B" || st.Current == nil || st.Current.Version != "1.1.0" {
		t.Errorf("Status = %+v, %v", st, err)
	}
}

func TestHealthFailureRollsBack(t *testing.T) {
	r := newRig(t)
	r.health = failHealth{}
	out := filepath.Join(r.dir, "rollback.log")
	writeHook(t, filepath.Join(r.cfg.Hooks.Dir, HookOnRollback), "10-log", `echo "$AP_SLOT $AP_REASON" >> `+out)
	factory := r.slotBytes("A")
	p := r.build(spec{version: "1.1.0", security: 1, comps: []comp{
		image("rootfs", "1.1.0", randomBytes(2, 200<<10)),
		pkg("app", "2.0.0", map[string]string{"bin/app": "new"}),
	}})
	e := r.engine()
	if _, err := r.install(e, p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	e, status := r.reboot(sim.Default) // boots B, checks fail, marks B bad, asks for a reboot
	if status != StatusRebooting || r.reboots != 2 {
		t.Fatalf("after trial: status %q reboots %d, want %q and 2", status, r.reboots, StatusRebooting)
	}
	if rec := r.state(e); rec.State != Failed {
		t.Errorf("state %s, want failed", rec.State)
	}
	e, status = r.reboot(sim.Default)
	if status != RolledBack.String() {
		t.Fatalf("after fallback: status %q, want rolled-back", status)
	}
	rec := r.state(e)
	if rec.Last == nil || rec.Last.State != RolledBack || !strings.Contains(rec.Last.Reason, "status 500") {
		t.Errorf("last result %+v, want rolled-back naming the failed check", rec.Last)
	}
	if r.boot.Booted() != "A" || !bytes.Equal(r.slotBytes("A"), factory) {
		t.Errorf("booted %s; slot A changed: %v", r.boot.Booted(), !bytes.Equal(r.slotBytes("A"), factory))
	}
	if rec.SecurityVersion != 0 || rec.Installed["rootfs"] != "" {
		t.Errorf("counter %d installed %v, want untouched", rec.SecurityVersion, rec.Installed)
	}
	// The package rolled back with the image: no version dir, no current link.
	if _, err := os.Lstat(filepath.Join(r.cfg.DataDir, "packages", "app")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("package dir left behind: %v", err)
	}
	if log, _ := os.ReadFile(out); !strings.HasPrefix(string(log), "B health: ") || strings.Count(string(log), "\n") != 1 {
		t.Errorf("on-rollback hook log %q, want one run naming the health failure", log)
	}
}

func TestHangRollsBack(t *testing.T) {
	r := newRig(t)
	p := r.build(spec{version: "1.1.0", security: 1, comps: []comp{image("rootfs", "1.1.0", randomBytes(3, 100<<10))}})
	if _, err := r.install(r.engine(), p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	e, status := r.reboot(sim.Hang) // B hangs, watchdog resets, the script falls back to A
	if status != RolledBack.String() {
		t.Fatalf("status %q, want rolled-back", status)
	}
	rec := r.state(e)
	if rec.Last == nil || rec.Last.State != RolledBack || !strings.Contains(rec.Last.Reason, "did not come up") {
		t.Errorf("last %+v, want rolled-back after a hang", rec.Last)
	}
	bs, _ := r.boot.State()
	if r.boot.Booted() != "A" || bs.Primary != "A" || !slices.Contains(bs.Bad, "B") {
		t.Errorf("booted %s boot state %+v, want A primary and B bad", r.boot.Booted(), bs)
	}
	// A later reboot stays on A.
	if _, status := r.reboot(sim.Default); status != RolledBack.String() || r.boot.Booted() != "A" {
		t.Errorf("next boot: %q on %s", status, r.boot.Booted())
	}
}

func TestRefusals(t *testing.T) {
	r := newRig(t)
	e := r.engine()
	// Commit security version 5 first.
	p := r.build(spec{version: "1.0.1", security: 5, comps: []comp{pkg("app", "1.0.0", map[string]string{"a": "1"})}})
	if res, err := r.install(e, p, InstallOptions{}); err != nil || res.Status != Committed.String() {
		t.Fatalf("package-only install = %+v, %v; want committed without reboot", res, err)
	}
	other, _ := bundle.GenerateKey(bundle.AlgEd25519)
	img := func(v string) []comp { return []comp{image("rootfs", v, randomBytes(4, 64<<10))} }
	tests := []struct {
		name string
		s    spec
		want error
	}{
		{"lower security version", spec{version: "1.0.2", security: 4, comps: img("1.0.2")}, ErrSecurityVersion},
		{"wrong hardware", spec{version: "1.0.2", security: 5, hw: []string{"other-board"}, comps: img("1.0.2")}, ErrIncompatible},
		{"expired", spec{version: "1.0.2", security: 5, expires: r.now.Unix() - 60, comps: img("1.0.2")}, ErrExpired},
		{"untrusted key", spec{version: "1.0.2", security: 5, comps: img("1.0.2"), keys: []crypto.Signer{other}}, bundle.ErrUnknownKey},
		{"requires missing", spec{version: "1.0.2", security: 5, comps: img("1.0.2"), requires: []bundle.Dependency{{Name: "bootloader"}}}, ErrDependency},
		{"requires version", spec{version: "1.0.2", security: 5, comps: img("1.0.2"), requires: []bundle.Dependency{{Name: "base", Constraint: ">= 2"}}}, ErrDependency},
		{"depends on missing", spec{version: "1.0.2", security: 5, comps: []comp{pkg("x", "1.0.0", nil).dependsOn(bundle.Dependency{Name: "nope"})}}, ErrDependency},
		{"depends version", spec{version: "1.0.2", security: 5, comps: []comp{pkg("x", "1.0.0", nil).dependsOn(bundle.Dependency{Name: "app", Constraint: "^2"})}}, ErrDependency},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := r.build(tc.s)
			before := snapshot(t, r)
			for _, dry := range []bool{true, false} {
				_, err := r.install(e, p, InstallOptions{DryRun: dry})
				if !errors.Is(err, tc.want) {
					t.Errorf("Install(dry run %v) = %v, want %v", dry, err, tc.want)
				}
			}
			if after := snapshot(t, r); after != before {
				t.Errorf("refused bundle changed the device:\n%s\nwant:\n%s", after, before)
			}
		})
	}
}

func TestTopologicalOrder(t *testing.T) {
	r := newRig(t)
	dep := func(n string) bundle.Dependency { return bundle.Dependency{Name: n, Constraint: ">= 1"} }
	p := r.build(spec{version: "2.0.0", security: 1, requires: []bundle.Dependency{{Name: "base", Constraint: "^1"}}, comps: []comp{
		file("config", "1.0.0", "/etc/app.conf", []byte("x=1\n")).dependsOn(dep("app")),
		pkg("app", "1.2.0", map[string]string{"bin/app": "v1.2"}).dependsOn(dep("lib"), dep("base")),
		pkg("lib", "1.1.0", map[string]string{"lib/libx.so": "lib"}).dependsOn(dep("rootfs")),
		image("rootfs", "1.0.0", randomBytes(5, 100<<10)),
	}})
	e := r.engine()
	res, err := r.install(e, p, InstallOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for _, it := range res.Plan {
		plan = append(plan, it.Component)
	}
	want := []string{"rootfs", "lib", "app", "config"}
	if !slices.Equal(plan, want) {
		t.Errorf("dry-run plan %v, want %v", plan, want)
	}
	if len(r.order) != 0 {
		t.Errorf("dry run wrote %v", r.order)
	}
	if _, err := r.install(e, p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.order, want) {
		t.Errorf("write order %v, want %v", r.order, want)
	}
	conf := filepath.Join(r.cfg.FileRoot, "etc", "app.conf")
	if _, err := os.Stat(conf); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("file component visible before commit: %v", err)
	}
	e, status := r.reboot(sim.Default)
	if status != Committed.String() {
		t.Fatalf("status %q, want committed", status)
	}
	if b, _ := os.ReadFile(conf); string(b) != "x=1\n" {
		t.Errorf("%s = %q after commit", conf, b)
	}
	if b, _ := os.ReadFile(filepath.Join(r.cfg.DataDir, "packages", "app", "current", "bin", "app")); string(b) != "v1.2" {
		t.Errorf("app current = %q, want v1.2", b)
	}
	rec := r.state(e)
	for n, v := range map[string]string{"rootfs": "1.0.0", "lib": "1.1.0", "app": "1.2.0", "config": "1.0.0", "os": "2.0.0"} {
		if rec.Installed[n] != v {
			t.Errorf("Installed[%s] = %q, want %q", n, rec.Installed[n], v)
		}
	}
}

// snapshot describes everything a refused or bad bundle must leave alone:
// the data dir (but its lock file), the active slot and the bootloader.
func snapshot(t *testing.T, r *rig) string {
	t.Helper()
	var b strings.Builder
	for _, root := range []string{r.cfg.DataDir, r.cfg.FileRoot, filepath.Join(r.dir, "sim")} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || filepath.Base(p) == "lock" {
				return nil
			}
			rel, _ := filepath.Rel(r.dir, p)
			fi, _ := os.Lstat(p)
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				l, _ := os.Readlink(p)
				fmt.Fprintf(&b, "%s -> %s\n", rel, l)
			case fi.IsDir():
				fmt.Fprintf(&b, "%s/\n", rel)
			default:
				c, _ := os.ReadFile(p)
				fmt.Fprintf(&b, "%s %x\n", rel, sha256.Sum256(c))
			}
			return nil
		})
	}
	fmt.Fprintf(&b, "slot A %x\n", sha256.Sum256(r.slotBytes(r.boot.Booted())))
	return b.String()
}

func TestBadBundlesChangeNothing(t *testing.T) {
	r := newRig(t)
	e := r.engine()
	// A committed package first, so there is state and a package dir to protect.
	p0 := r.build(spec{name: "apps", version: "1.0.0", comps: []comp{pkg("app", "1.0.0", map[string]string{"bin/app": "old"})}})
	if _, err := r.install(e, p0, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(r.build(spec{version: "1.1.0", comps: []comp{
		image("rootfs", "1.1.0", randomBytes(6, 200<<10)),
		pkg("app", "1.1.0", map[string]string{"bin/app": "new", "etc/x": "y"}),
		file("conf", "1.0.0", "/etc/x.conf", []byte("conf")),
	}}))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := bundle.GenerateKey(bundle.AlgEd25519)
	untrusted, _ := os.ReadFile(r.build(spec{version: "1.1.0", keys: []crypto.Signer{other}, comps: []comp{image("rootfs", "1.1.0", randomBytes(6, 64<<10))}}))
	type bad struct {
		name string
		b    []byte
	}
	var cases []bad
	flip := func(off int) []byte {
		b := bytes.Clone(good)
		b[off] ^= 0x40
		return b
	}
	// Flipped bytes across the header, the signed section and every payload.
	for _, off := range []int{0, 9, 13, 20, 100, 400, len(good) / 4, len(good) / 2, len(good) * 3 / 4, len(good) - 200, len(good) - 1} {
		cases = append(cases, bad{fmt.Sprintf("flip@%d", off), flip(off)})
	}
	for _, n := range []int{0, 10, 16, 300, len(good) / 3, len(good) - 1} {
		cases = append(cases, bad{fmt.Sprintf("truncate@%d", n), good[:n]})
	}
	cases = append(cases, bad{"appended garbage", append(bytes.Clone(good), "garbage"...)}, bad{"untrusted key", untrusted})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, r)
			p := filepath.Join(t.TempDir(), "bad.apb")
			os.WriteFile(p, tc.b, 0o644)
			if _, err := r.install(e, p, InstallOptions{}); err == nil {
				t.Fatalf("Install accepted a bad bundle")
			}
			if after := snapshot(t, r); after != before {
				t.Errorf("bad bundle changed the device:\n%s\nwant:\n%s", after, before)
			}
		})
	}
	// And the good one still installs afterwards.
	p := filepath.Join(t.TempDir(), "good.apb")
	os.WriteFile(p, good, 0o644)
	if _, err := r.install(e, p, InstallOptions{}); err != nil {
		t.Errorf("good bundle after bad ones: %v", err)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	r := newRig(t)
	e := r.engine()
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(7, 100<<10)), pkg("app", "1.0.0", map[string]string{"a": "b"})}})
	before := snapshot(t, r)
	res, err := r.install(e, p, InstallOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusDryRun || len(res.Plan) != 2 || res.Plan[0].Slot != "B" || res.Plan[0].Size != 100<<10 {
		t.Errorf("dry run = %+v", res)
	}
	if after := snapshot(t, r); after != before || r.slotBytes("B") != nil {
		t.Errorf("dry run changed the device")
	}
}

func TestOperatorCommands(t *testing.T) {
	r := newRig(t)
	r.cfg.Reboot.Policy = RebootHub
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(8, 64<<10))}})
	e := r.engine()
	res, err := r.install(e, p, InstallOptions{})
	if err != nil || res.Status != StatusWaitingHub || r.reboots != 0 {
		t.Fatalf("Install = %+v, %v, reboots %d; want waiting for the hub", res, err, r.reboots)
	}
	if _, err := e.MarkGood(context.Background()); !errors.Is(err, ErrNotInTrial) {
		t.Errorf("MarkGood before the trial = %v, want ErrNotInTrial", err)
	}
	// Cancel before the reboot: the try is withdrawn.
	if _, err := e.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := r.state(e)
	bs, _ := r.boot.State()
	if rec.State != Abandoned || bs.Pending != "" {
		t.Errorf("after rollback: state %s pending %q", rec.State, bs.Pending)
	}
	// Install again, the hub orders the reboot, the operator marks the trial bad.
	if _, err := r.install(e, p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.RebootNow(context.Background()); err != nil || r.reboots != 1 {
		t.Fatalf("RebootNow = %v, reboots %d", err, r.reboots)
	}
	r.health = blockHealth{}
	if _, err := r.boot.Reboot(); err != nil {
		t.Fatal(err)
	}
	e = r.engine()
	if _, err := e.MarkBad(context.Background()); err == nil {
		t.Errorf("MarkBad with the trial not yet started: want an error")
	}
	// Walk the state to Trial by hand, then mark bad.
	rec = r.state(e)
	rec.State = Trial
	if err := e.store.Save(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := e.MarkBad(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec := r.state(e); rec.State != Failed || rec.Reason != "marked bad by the operator" {
		t.Errorf("state %s reason %q", rec.State, rec.Reason)
	}
	e, status := r.reboot(sim.Default)
	if status != RolledBack.String() || r.boot.Booted() != "A" {
		t.Errorf("status %q booted %s", status, r.boot.Booted())
	}
}

type blockHealth struct{}

func (blockHealth) Run(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

func TestCorruptStateFallsBack(t *testing.T) {
	r := newRig(t)
	e := r.engine()
	p := r.build(spec{name: "apps", version: "1.0.0", security: 3, comps: []comp{pkg("app", "1.0.0", map[string]string{"a": "b"})}})
	if _, err := r.install(e, p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	p = r.build(spec{name: "apps", version: "1.0.1", security: 4, comps: []comp{pkg("app", "1.0.1", map[string]string{"a": "c"})}})
	if _, err := r.install(e, p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(e.store.Path(), []byte("{garbage"), 0o600)
	if _, err := e.store.Load(); !errors.Is(err, ErrCorruptState) {
		t.Errorf("Load of a corrupt file = %v, want ErrCorruptState", err)
	}
	st, err := e.Status()
	if err != nil {
		t.Fatalf("Status with a corrupt state file: %v", err)
	}
	if st.SecurityVersion != 3 {
		t.Errorf("previous copy has counter %d, want 3 (the save before the last commit)", st.SecurityVersion)
	}
	os.WriteFile(e.store.Path()+".prev", []byte("[]"), 0o600)
	if _, err := e.Status(); !errors.Is(err, ErrCorruptState) {
		t.Errorf("Status with both copies corrupt = %v, want ErrCorruptState", err)
	}
}

func TestRebootWindow(t *testing.T) {
	r := newRig(t)
	r.cfg.Reboot.Policy = RebootWindow
	r.cfg.Reboot.Window = "02:00-04:00"
	r.cfg.Reboot.TimeZone = "UTC"
	r.now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(10, 64<<10))}})
	res, err := r.install(r.engine(), p, InstallOptions{})
	if err != nil || res.Status != StatusWaitingWindow || r.reboots != 0 {
		t.Fatalf("Install at noon = %q, %v, reboots %d; want waiting for the window", res.Status, err, r.reboots)
	}
	// The daemon polls; nothing happens until the window opens.
	if status, err := r.engine().Resume(context.Background()); err != nil || status != StatusWaitingWindow || r.reboots != 0 {
		t.Errorf("Resume at noon = %q, %v, reboots %d", status, err, r.reboots)
	}
	r.now = time.Date(2026, 11, 24, 2, 30, 0, 0, time.UTC)
	if status, err := r.engine().Resume(context.Background()); err != nil || status != StatusRebooting || r.reboots != 1 {
		t.Errorf("Resume in the window = %q, %v, reboots %d; want a reboot", status, err, r.reboots)
	}
	if _, status := r.reboot(sim.Default); status != Committed.String() {
		t.Errorf("after the reboot: %q, want committed", status)
	}
}

func TestHookFailuresAreReported(t *testing.T) {
	r := newRig(t)
	writeHook(t, filepath.Join(r.cfg.Hooks.Dir, HookPostInstall), "10-warn", "exit 3")
	writeHook(t, filepath.Join(r.cfg.Hooks.Dir, HookPostCommit), "10-warn", "exit 4")
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(13, 64<<10))}})
	if _, err := r.install(r.engine(), p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	e, status := r.reboot(sim.Default)
	if status != Committed.String() {
		t.Fatalf("status %q, want committed despite failing hooks", status)
	}
	rec := r.state(e)
	if got := strings.Join(rec.Last.Warnings, "|"); !strings.Contains(got, "post-install.d: 10-warn: exit status 3") || !strings.Contains(got, "post-commit.d: 10-warn: exit status 4") {
		t.Errorf("warnings %q, want both failing hooks", got)
	}
}

func TestRunawayCap(t *testing.T) {
	r := newRig(t)
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(14, 64<<10))}})
	e := r.engine()
	if _, err := r.install(e, p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	// Waiting for the hub is not a transition, however long it lasts.
	r.cfg.Reboot.Policy = RebootHub
	for range 2 * maxTransitions {
		if status, err := r.engine().Resume(context.Background()); err != nil || status != StatusWaitingHub {
			t.Fatalf("Resume while waiting for the hub = %q, %v", status, err)
		}
	}
	// A reboot that is requested again and again but never happens ends in the cap.
	r.cfg.Reboot.Policy = RebootNow
	e = r.engine()
	var status string
	for range maxTransitions + 1 {
		var err error
		if status, err = e.Resume(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	rec := r.state(e)
	if status != RolledBack.String() || rec.Last == nil || !strings.Contains(rec.Last.Reason, "too many state transitions") {
		t.Errorf("after %d steps: status %q last %+v", maxTransitions+1, status, rec.Last)
	}
	bs, _ := r.boot.State()
	if bs.Pending != "" || r.boot.Booted() != "A" {
		t.Errorf("boot state %+v after giving up", bs)
	}
}

func TestInstallFromStream(t *testing.T) {
	r := newRig(t)
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(15, 200<<10))}})
	b, _ := os.ReadFile(p)
	e := r.engine()
	// Leftover spool of an install a crash interrupted.
	os.WriteFile(filepath.Join(r.cfg.DataDir, "incoming-123.apb"), []byte("partial"), 0o600)
	res, err := e.Install(context.Background(), io.MultiReader(bytes.NewReader(b)), InstallOptions{})
	if err != nil || res.Status != StatusRebooting {
		t.Fatalf("Install from a stream = %+v, %v", res, err)
	}
	if left, _ := filepath.Glob(filepath.Join(r.cfg.DataDir, "incoming-*")); len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}

func TestSecondUpdateGoesBackToA(t *testing.T) {
	r := newRig(t)
	img1, img2 := randomBytes(16, 100<<10), randomBytes(17, 120<<10)
	p1 := r.build(spec{version: "1.1.0", security: 1, comps: []comp{image("rootfs", "1.1.0", img1)}})
	p2 := r.build(spec{version: "1.2.0", security: 2, comps: []comp{image("rootfs", "1.2.0", img2)}})
	if _, err := r.install(r.engine(), p1, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	e, status := r.reboot(sim.Default)
	if status != Committed.String() || r.boot.Booted() != "B" {
		t.Fatalf("first update: %q on %s", status, r.boot.Booted())
	}
	res, err := r.install(e, p2, InstallOptions{})
	if err != nil || len(res.Plan) != 1 || res.Plan[0].Slot != "A" {
		t.Fatalf("second install = %+v, %v; want slot A", res, err)
	}
	e, status = r.reboot(sim.Default)
	if status != Committed.String() || r.boot.Booted() != "A" || !bytes.Equal(r.slotBytes("A"), img2) {
		t.Fatalf("second update: %q on %s", status, r.boot.Booted())
	}
	rec := r.state(e)
	if rec.SecurityVersion != 2 || rec.Chunks["rootfs/A"].Version != "1.2.0" || rec.Chunks["rootfs/B"].Version != "1.1.0" {
		t.Errorf("counter %d, chunk indexes A %q B %q", rec.SecurityVersion, rec.Chunks["rootfs/A"].Version, rec.Chunks["rootfs/B"].Version)
	}
	if ci, ok, err := e.ChunkIndex("rootfs", "B"); err != nil || !ok || ci.Size != uint64(len(img1)) {
		t.Errorf("ChunkIndex(rootfs, B) = %+v, %v, %v", ci.Size, ok, err)
	}
	// Replaying the first bundle is refused by the anti-rollback counter.
	if _, err := r.install(e, p1, InstallOptions{}); !errors.Is(err, ErrSecurityVersion) {
		t.Errorf("replay of 1.1.0 = %v, want ErrSecurityVersion", err)
	}
}

func TestPackageInstallPath(t *testing.T) {
	r := newRig(t)
	app := func(v, body string) comp {
		c := pkg("app", v, map[string]string{"bin/app": body})
		c.c.Path = "/opt/gateway"
		return c
	}
	e := r.engine()
	for _, v := range []string{"1.0.0", "1.1.0"} {
		p := r.build(spec{name: "apps", version: v, comps: []comp{app(v, "app "+v)}})
		if res, err := r.install(e, p, InstallOptions{}); err != nil || res.Status != Committed.String() {
			t.Fatalf("install %s = %+v, %v", v, res, err)
		}
		b, err := os.ReadFile(filepath.Join(r.cfg.FileRoot, "opt", "gateway", "bin", "app"))
		if err != nil || string(b) != "app "+v {
			t.Errorf("/opt/gateway/bin/app = %q, %v; want app %s", b, err, v)
		}
	}
	// A real directory at the install path is left alone and reported.
	os.Remove(filepath.Join(r.cfg.FileRoot, "opt", "gateway"))
	os.MkdirAll(filepath.Join(r.cfg.FileRoot, "opt", "gateway"), 0o755)
	p := r.build(spec{name: "apps", version: "1.2.0", comps: []comp{app("1.2.0", "app 1.2.0")}})
	if _, err := r.install(e, p, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := r.state(e)
	if len(rec.Last.Warnings) != 1 || !strings.Contains(rec.Last.Warnings[0], "is not a symlink") {
		t.Errorf("warnings %q, want the install path conflict", rec.Last.Warnings)
	}
}

// mangler changes one byte at offset at on its way to the slot, as a bad
// flash block would.
type mangler struct {
	w   io.Writer
	at  int64
	off int64
}

func (m *mangler) Write(b []byte) (int, error) {
	if m.at >= m.off && m.at < m.off+int64(len(b)) {
		b = bytes.Clone(b)
		b[m.at-m.off] ^= 1
	}
	m.off += int64(len(b))
	return m.w.Write(b)
}

func TestReadBackCatchesBadMedium(t *testing.T) {
	img := randomBytes(18, 9<<20) // more than one writeback range
	for _, at := range []int64{100, 8<<20 + 5, 9<<20 - 1} {
		r := newRig(t)
		r.cfg.Verify = VerifyOn
		r.wrap = func(c string, w io.Writer) io.Writer { return &mangler{w: w, at: at} }
		p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", img)}})
		e := r.engine()
		if err := e.ConfirmBoot(context.Background()); err != nil { // as the daemon at boot
			t.Fatal(err)
		}
		before := snapshot(t, r)
		if _, err := r.install(e, p, InstallOptions{}); !errors.Is(err, ErrVerify) {
			t.Errorf("byte %d changed on the medium: Install = %v, want ErrVerify", at, err)
		}
		if snapshot(t, r) != before {
			t.Errorf("byte %d: a failed read-back changed the device state", at)
		}
	}
	// Without the fault the same install verifies.
	r := newRig(t)
	r.cfg.Verify = VerifyOn
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", img)}})
	if _, err := r.install(r.engine(), p, InstallOptions{}); err != nil {
		t.Errorf("Install with read-back = %v", err)
	}
}

// fakeBoot is a bootloader whose state the test sets directly.
type fakeBoot struct {
	st    slots.BootState
	calls []string
}

func (f *fakeBoot) State() (slots.BootState, error) { return f.st, nil }
func (f *fakeBoot) Try(s string) error              { f.calls = append(f.calls, "try "+s); return nil }
func (f *fakeBoot) Commit(s string) error           { f.calls = append(f.calls, "commit "+s); return nil }
func (f *fakeBoot) MarkBad(s string) error          { f.calls = append(f.calls, "bad "+s); return nil }

func TestConfirmBoot(t *testing.T) {
	tests := []struct {
		name    string
		st      slots.BootState
		calls   string
		reboots int
	}{
		{"refill counted tries", slots.BootState{Primary: "A", Tries: map[string]int{"A": 2, "B": 3}}, "commit A", 0},
		{"no counts no write", slots.BootState{Primary: "A"}, "", 0},
		{"committed trial still flagged", slots.BootState{Primary: "A", Trial: "A"}, "", 0},
		{"unknown trial", slots.BootState{Primary: "B", Trial: "A"}, "bad A", 1},
		{"counted tries ran out unconfirmed", slots.BootState{Primary: "B", Trial: "A", Tries: map[string]int{"A": 0, "B": 3}}, "commit A", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			fb := &fakeBoot{st: tc.st}
			e, err := New(r.cfg, Options{Slots: r.slots, Bootloader: fb, Booted: func() (string, error) { return "A", nil },
				Rebooter: rebootRecorder{r}, Health: okHealth{}, Trust: r.trust})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.ConfirmBoot(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(fb.calls, ", "); got != tc.calls || r.reboots != tc.reboots {
				t.Errorf("bootloader calls %q reboots %d, want %q and %d", got, r.reboots, tc.calls, tc.reboots)
			}
		})
	}
}
