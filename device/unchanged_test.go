package device

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/autopatcher/autopatcher/slots/sim"
)

// TestUnchangedComponents updates a bundle whose package and file are the
// same as the committed ones (only the image changed): they are planned as
// unchanged, not written again, and stay current at commit and after a
// rollback, whether the bundle comes as a file or as a download.
func TestUnchangedComponents(t *testing.T) {
	for _, via := range []string{"install", "download"} {
		t.Run(via, func(t *testing.T) {
			ctx := context.Background()
			r := newRig(t)
			app := pkg("gateway-app", "1.4.2", map[string]string{"bin/app": "app 1.4.2"})
			app.c.Path = "/opt/gateway"
			conf := file("gateway-conf", "1.0.0", "/etc/gateway.conf", []byte("port=8080\n"))
			release := func(v string, seed int) string {
				return r.build(spec{name: "gateway", version: v, comps: []comp{image("rootfs", v, randomBytes(seed, 200<<10)), app, conf}})
			}
			deploy := func(e *Engine, p string) Outcome {
				t.Helper()
				if via == "install" {
					out, err := r.install(e, p, InstallOptions{})
					if err != nil {
						t.Fatalf("install: %v", err)
					}
					return out
				}
				fd := newFeeder(t, p, r.trust)
				d, err := e.Prepare(ctx, fd.signed, DownloadOptions{})
				if err != nil {
					t.Fatalf("prepare: %v", err)
				}
				fd.feed(d, -1)
				out, err := d.Finish(ctx)
				if err != nil {
					t.Fatalf("finish: %v", err)
				}
				if _, err := e.Resume(ctx); err != nil {
					t.Fatalf("resume: %v", err)
				}
				return out
			}
			cur := filepath.Join(r.cfg.DataDir, "packages", "opt", "gateway", "current")
			confPath := filepath.Join(r.cfg.FileRoot, "etc", "gateway.conf")
			deploy(r.engine(), release("2.1.0", 1))
			e, status := r.reboot(sim.Default)
			if status != Committed.String() {
				t.Fatalf("2.1.0: %s, want committed", status)
			}
			was, err := os.Readlink(cur)
			if err != nil {
				t.Fatal(err)
			}
			confInfo, err := os.Stat(confPath)
			if err != nil {
				t.Fatal(err)
			}

			p := release("2.2.0", 2)
			dry, err := r.install(e, p, InstallOptions{DryRun: true})
			if err != nil {
				t.Fatalf("dry run: %v", err)
			}
			unchanged := map[string]bool{}
			for _, it := range dry.Plan {
				unchanged[it.Component] = it.Unchanged
			}
			want := map[string]bool{"rootfs": false, "gateway-app": true, "gateway-conf": true}
			for c, w := range want {
				if unchanged[c] != w {
					t.Errorf("dry run: %s unchanged = %v, want %v", c, unchanged[c], w)
				}
			}
			r.order = nil
			deploy(e, p)
			// The state lists the unchanged components as written in full.
			comps := r.state(e).Components
			if len(comps) != len(want) {
				t.Errorf("state lists %d components, want %d", len(comps), len(want))
			}
			for _, c := range comps {
				if unchanged[c.Name] && (!c.Done || c.Written != c.Size) {
					t.Errorf("unchanged %s: done %v, written %d of %d; want done and written in full", c.Name, c.Done, c.Written, c.Size)
				}
			}
			e, status = r.reboot(sim.Default)
			if status != Committed.String() {
				t.Fatalf("2.2.0: %s, want committed (last %+v)", status, r.state(e).Last)
			}
			if got, _ := os.Readlink(cur); got != was {
				t.Errorf("current = %q after commit, want %q", got, was)
			}
			if b, err := os.ReadFile(filepath.Join(r.cfg.FileRoot, "opt", "gateway", "bin", "app")); err != nil || string(b) != "app 1.4.2" {
				t.Errorf("/opt/gateway/bin/app = %q, %v", b, err)
			}
			if fi, err := os.Stat(confPath); err != nil || !os.SameFile(fi, confInfo) {
				t.Errorf("config file was replaced (%v), want it left alone", err)
			}
			if got := r.state(e).Installed["gateway-app"]; got != "1.4.2" {
				t.Errorf("installed gateway-app = %q", got)
			}

			// A failing trial rolls back: the unchanged package stays current.
			r.health = failHealth{}
			deploy(e, release("2.3.0", 3))
			e, _ = r.reboot(sim.Default)
			r.boot.Reboot()
			e = r.engine()
			if err := e.ConfirmBoot(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			rec := r.state(e)
			if rec.State != RolledBack {
				t.Fatalf("2.3.0: state %s, want rolled-back", rec.State)
			}
			if got, _ := os.Readlink(cur); got != was {
				t.Errorf("current = %q after rollback, want %q", got, was)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(cur), was)); err != nil {
				t.Errorf("current version dir gone after rollback: %v", err)
			}
			if b, err := os.ReadFile(confPath); err != nil || string(b) != "port=8080\n" {
				t.Errorf("config = %q, %v after rollback", b, err)
			}
		})
	}
}
