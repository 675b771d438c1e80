package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHealthChecks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			fmt.Fprint(w, "ok")
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close) // after the parallel subtests, not when this function returns
	dir := t.TempDir()
	up := filepath.Join(dir, "uptime")
	os.WriteFile(up, []byte("120.50 200.00\n"), 0o644)
	systemctl := filepath.Join(dir, "systemctl")
	// A fake systemctl: "is-active -- UNIT" prints active only for good.service.
	os.WriteFile(systemctl, []byte("#!/bin/sh\nif [ \"$3\" = good.service ]; then echo active; else echo failed; exit 3; fi\n"), 0o755)
	checks := filepath.Join(dir, "health.d")
	writeHook(t, checks, "10-env", `test "$AP_SLOT" = B`)
	writeHook(t, checks, "20-ok", "exit 0")
	tests := []struct {
		name    string
		mod     func(c *Checker)
		wantErr string
	}{
		{"all pass", func(c *Checker) {}, ""},
		{"http status", func(c *Checker) { c.HTTP = append(c.HTTP, HTTPCheck{URL: srv.URL + "/teapot", Status: 200}) }, "status 418, want 200"},
		{"http expected status", func(c *Checker) { c.HTTP = []HTTPCheck{{URL: srv.URL + "/teapot", Status: 418}} }, ""},
		{"http refused", func(c *Checker) { c.HTTP = []HTTPCheck{{URL: "http://" + closedAddr(t) + "/"}} }, "GET http://"},
		{"unit inactive", func(c *Checker) { c.Units = []string{"good.service", "bad.service"} }, "unit bad.service is failed"},
		{"uptime too short", func(c *Checker) { c.MinUptime = 10 * time.Minute }, "uptime 2m0s below minimum 10m0s"},
		{"executable fails", func(c *Checker) { writeHook(t, c.Dir, "30-fail", "echo disk full; exit 1") }, "30-fail: exit status 1 disk full"},
		{"executable timeout", func(c *Checker) { writeHook(t, c.Dir, "30-slow", "sleep 5"); c.run.timeout = 100 * time.Millisecond }, "timed out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A failing case retries until the deadline; the cases run side
			// by side so a deadline roomy enough for a loaded machine costs
			// the suite little.
			t.Parallel()
			d := filepath.Join(t.TempDir(), "health.d")
			os.MkdirAll(d, 0o755)
			for _, n := range []string{"10-env", "20-ok"} {
				b, _ := os.ReadFile(filepath.Join(checks, n))
				os.WriteFile(filepath.Join(d, n), b, 0o755)
			}
			c := &Checker{Dir: d, Timeout: 5 * time.Second, HTTP: []HTTPCheck{{URL: srv.URL + "/ok", Status: 200}},
				Units: []string{"good.service"}, Systemctl: systemctl, MinUptime: time.Minute, UptimeFile: up,
				Env: []string{"AP_SLOT=B"}, Retry: 10 * time.Millisecond}
			tc.mod(c)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err := c.Run(ctx)
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Run = %v, want success", err)
				}
				return
			}
			if !errors.Is(err, ErrHealth) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Run = %v, want ErrHealth containing %q", err, tc.wantErr)
			}
		})
	}
}

func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestHTTPGetBody(t *testing.T) {
	body := strings.Repeat("bundle bytes ", 10000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "autopatchd" {
			w.WriteHeader(400)
		}
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	resp, err := HTTPGet(context.Background(), srv.URL+"/x.apb?v=1", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || string(got) != body {
		t.Errorf("status %d, body of %d bytes, want 200 and %d bytes", resp.Status, len(got), len(body))
	}
	if _, err := HTTPGet(context.Background(), "https://127.0.0.1/", time.Second); !errors.Is(err, ErrHTTP) {
		t.Errorf("https URL: %v, want ErrHTTP", err)
	}
}

func TestHooks(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	hooks := filepath.Join(dir, HookPreInstall)
	writeHook(t, hooks, "20-second", `echo "2 $AP_HOOK $AP_BUNDLE $AP_VERSION $AP_SLOT $AP_COMPONENTS" >> `+out)
	writeHook(t, hooks, "10-first", `echo "1 $AP_STATE" >> `+out)
	writeHook(t, hooks, ".hidden", "exit 1")
	writeHook(t, hooks, "15-backup~", "exit 1")
	os.WriteFile(filepath.Join(hooks, "12-not-executable"), []byte("exit 1"), 0o644)
	rec := &Record{State: Writing, Bundle: &BundleInfo{Name: "os", Version: "1.2.3"}, Target: "B",
		Components: []Progress{{Name: "rootfs", Version: "1.2.3"}, {Name: "app", Version: "2.0.0"}}}
	r := runner{timeout: 5 * time.Second}
	res, err := r.runDir(context.Background(), hooks, hookEnv(HookPreInstall, rec, dir), true)
	if err != nil || len(res) != 2 {
		t.Fatalf("runDir = %d results, %v", len(res), err)
	}
	got, _ := os.ReadFile(out)
	if want := "1 writing\n2 pre-install.d os 1.2.3 B rootfs=1.2.3 app=2.0.0\n"; string(got) != want {
		t.Errorf("hooks wrote %q, want %q", got, want)
	}
	writeHook(t, hooks, "15-fail", "echo nope >&2; exit 7")
	res, err = r.runDir(context.Background(), hooks, nil, true)
	if !errors.Is(err, ErrHook) || !strings.Contains(err.Error(), "15-fail: exit status 7") || len(res) != 2 {
		t.Errorf("runDir with a failing hook = %d results, %v", len(res), err)
	}
	if !strings.Contains(res[1].Output, "nope") {
		t.Errorf("output %q, want the hook's stderr", res[1].Output)
	}
	res, _ = r.runDir(context.Background(), hooks, nil, false)
	if len(res) != 3 {
		t.Errorf("without stopOnError %d results, want 3", len(res))
	}
	if res, err := r.runDir(context.Background(), filepath.Join(dir, "missing.d"), nil, true); err != nil || res != nil {
		t.Errorf("missing dir = %v, %v", res, err)
	}
}

func TestPreInstallHookAborts(t *testing.T) {
	r := newRig(t)
	writeHook(t, filepath.Join(r.cfg.Hooks.Dir, HookPreInstall), "10-no", "echo battery low; exit 1")
	p := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(9, 64<<10))}})
	e := r.engine()
	before := snapshot(t, r)
	_, err := r.install(e, p, InstallOptions{})
	if !errors.Is(err, ErrHook) || !strings.Contains(err.Error(), "10-no") {
		t.Errorf("Install = %v, want ErrHook naming the hook", err)
	}
	if snapshot(t, r) != before || r.slotBytes("B") != nil {
		t.Errorf("aborted install changed the device")
	}
}

func TestHooksAsUnprivilegedUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to the user nobody")
	}
	cred, err := credential("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir's parent is private
	out := filepath.Join(dir, "uid")
	writeHook(t, filepath.Join(dir, "hooks"), "10-id", "id -u > "+out)
	os.Chmod(filepath.Join(dir, "hooks"), 0o755)
	r := runner{cred: cred, timeout: 5 * time.Second}
	if _, err := r.runDir(context.Background(), filepath.Join(dir, "hooks"), nil, true); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if want := fmt.Sprintf("%d\n", cred.Uid); string(got) != want || cred.Uid == 0 {
		t.Errorf("hook ran as uid %q, want %q", got, want)
	}
	if _, err := credential("no-such-user-here"); err == nil {
		t.Errorf("unknown user accepted")
	}
}
