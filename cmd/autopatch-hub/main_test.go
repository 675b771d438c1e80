package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/hub/hubtest"
	"github.com/autopatcher/autopatcher/transport"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), err
}

func TestCLI(t *testing.T) {
	ctx := context.Background()
	key, _, pub := hubtest.Key(t)
	other, _, _ := hubtest.Key(t)
	s := hubtest.Start(t, pub, nil)
	url := "http://" + s.HTTPAddr()
	dir := t.TempDir()
	good := filepath.Join(dir, "app-1.0.0.apb")
	os.WriteFile(good, hubtest.Bundle(t, key, "app", "1.0.0", hubtest.Payload(1, 300<<10)), 0o644)
	bad := filepath.Join(dir, "evil.apb")
	os.WriteFile(bad, hubtest.Bundle(t, other, "evil", "1.0.0", []byte("x")), 0o644)

	// A device registers itself over MQTT and says hello.
	conn, err := transport.Dial(ctx, transport.Config{Servers: []string{"mqtt://" + s.MQTTAddr()}, AllowPlain: true,
		ClientID: "rpi-7", Username: "rpi-7", Password: []byte("pw"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	topic, _ := transport.Topic("rpi-7", transport.ChHello)
	if err := conn.Publish(ctx, topic, &transport.Hello{Device: "rpi-7", Hardware: "sim"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if d, err := s.Hub.Store().Device(ctx, "rpi-7"); err == nil && d.Hardware == "sim" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("hello not stored")
		}
		time.Sleep(10 * time.Millisecond)
	}

	op := []string{"--hub", url, "--token", hubtest.OperatorToken}
	view := []string{"--hub", url, "--token", hubtest.ViewerToken}
	steps := []struct {
		args    []string
		wantErr bool
		want    string
	}{
		{append([]string{"bundle", "upload"}, append(view, good)...), true, "role viewer may not"},
		{append([]string{"bundle", "upload"}, append(op, bad)...), true, "no signature by a trusted key"},
		{append([]string{"bundle", "upload"}, append(op, good)...), false, "uploaded app@1.0.0"},
		{append([]string{"bundle", "list"}, view...), false, "app   1.0.0"},
		{append([]string{"bundle", "show"}, append(view, "app@1.0.0")...), false, "component: c0 1.0.0"},
		{append([]string{"bundle", "show"}, append(view, "app")...), true, "want NAME@VERSION"},
		{append([]string{"devices", "list"}, append(view, "--filter", "status=pending")...), false, "rpi-7"},
		{append([]string{"devices", "list"}, append(view, "--filter", "status=accepted")...), false, "ID"},
		{append([]string{"devices", "list"}, append(view, "--filter", "hardware=sim", "--json")...), false, `"hardware": "sim"`},
		{append([]string{"devices", "list"}, append(view, "--filter", "size=big")...), true, "filter key"},
		{append([]string{"devices", "accept"}, append(view, "rpi-7")...), true, "role viewer may not"},
		{append([]string{"deploy"}, append(op, "--bundle", "app@1.0.0", "--device", "rpi-7")...), true, "not accepted"},
		{append([]string{"devices", "accept"}, append(op, "rpi-7")...), false, "rpi-7: accepted"},
		{append([]string{"devices", "show"}, append(view, "rpi-7")...), false, "status:    accepted"},
		{append([]string{"deploy"}, append(view, "--bundle", "app@1.0.0", "--device", "rpi-7")...), true, "role viewer may not"},
		{append([]string{"deploy"}, append(op, "--bundle", "app@1.0.0", "--device", "rpi-7")...), false, "deployment 1: app@1.0.0 to rpi-7: offered"},
		{append([]string{"deploy"}, append(op, "--bundle", "app@1.0.0", "--device", "rpi-7", "--reboot", "later")...), true, `reboot "later"`},
		{append([]string{"deploy"}, append(op, "--bundle", "app@1.0.0", "--device", "rpi-7", "--reboot", "window", "--window", "0 2 * * *")...), true, "needs window_length"},
		{append([]string{"deploy"}, append(op, "--bundle", "app@1.0.0", "--device", "rpi-7", "--reboot", "hub")...), false, "deployment 2: app@1.0.0 to rpi-7: offered (reboot hub)"},
		{append([]string{"devices", "reboot"}, append(view, "rpi-7")...), true, "role viewer may not"},
		{append([]string{"devices", "reboot"}, append(op, "rpi-7")...), false, "rpi-7: reboot sent (cmd-"},
		{append([]string{"devices", "reboot"}, append(op, "rpi-7")...), false, "no deployment waits for a reboot"},
		{append([]string{"devices", "report"}, append(op, "rpi-7")...), false, "rpi-7: report sent (cmd-"},
		{append([]string{"devices", "report"}, append(op, "nobody")...), true, "not found"},
		{append([]string{"devices", "show"}, append(view, "rpi-7")...), false, "deployment: 2 app@1.0.0 offered"},
		{append([]string{"deploy", "cancel"}, append(view, "2")...), true, "role viewer may not"},
		{append([]string{"deploy", "cancel"}, append(op, "2")...), false, "deployment 2: app@1.0.0 to rpi-7: cancelled"},
		{append([]string{"deploy", "cancel"}, append(op, "2")...), true, "already finished"},
		{append([]string{"deploy", "cancel"}, append(op, "two")...), true, "want a positive number"},
		{append([]string{"audit"}, op...), false, "oscar cancel rpi-7 deployment=2"},
		{append([]string{"audit"}, op...), false, "oscar reboot rpi-7"},
		{append([]string{"audit"}, op...), false, "hash chain verified"},
		{[]string{"bundle", "list", "--hub", url, "--token", "wrong-wrong-wrong-wrong"}, true, "unknown API token"},
		{[]string{"frobnicate"}, true, "unknown command"},
	}
	for _, st := range steps {
		out, err := runCLI(t, st.args...)
		if (err != nil) != st.wantErr {
			t.Errorf("run %v: err = %v, want error %v\n%s", st.args, err, st.wantErr, out)
			continue
		}
		got := out
		if err != nil {
			got += err.Error()
		}
		if !strings.Contains(got, st.want) {
			t.Errorf("run %v: output %q does not contain %q", st.args, got, st.want)
		}
	}

	// deploy --wait returns once the device waits for its reboot: for the
	// hub's command or for its maintenance window.
	status, _ := transport.Topic("rpi-7", transport.ChStatus)
	deployWait := func(id int64, policy []string, states ...string) string {
		t.Helper()
		waited := make(chan string, 1)
		go func() {
			args := append([]string{"deploy"}, append(op, "--bundle", "app@1.0.0", "--device", "rpi-7", "--wait", "20s")...)
			out, err := runCLI(t, append(args, policy...)...)
			if err != nil {
				out += "error: " + err.Error()
			}
			waited <- out
		}()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := s.Hub.Store().Deployment(ctx, id); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("deployment %d not created", id)
			}
		}
		for _, state := range states {
			if err := conn.Publish(ctx, status, &transport.Status{Offer: fmt.Sprintf("dep-%d", id), State: state}); err != nil {
				t.Fatal(err)
			}
		}
		return <-waited
	}
	out := deployWait(3, []string{"--reboot", "hub"}, "downloading", "installing", "waiting-hub")
	for _, want := range []string{" installing ", " waiting-reboot ", "reboot with `autopatch-hub devices reboot rpi-7`"} {
		if !strings.Contains(out, want) {
			t.Errorf("deploy --wait output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "error:") {
		t.Errorf("deploy --wait failed at waiting-reboot:\n%s", out)
	}
	if out, err := runCLI(t, append([]string{"devices", "show"}, append(view, "rpi-7")...)...); err != nil ||
		!strings.Contains(out, "deployment: 3 app@1.0.0 waiting-reboot\n            installed; waits for `autopatch-hub devices reboot rpi-7`") {
		t.Errorf("devices show: %v\n%s", err, out)
	}
	if out, err := runCLI(t, append([]string{"devices", "reboot"}, append(op, "rpi-7")...)...); err != nil ||
		!strings.Contains(out, "deployment 3 is waiting-reboot") || strings.Contains(out, "no deployment waits") {
		t.Errorf("devices reboot: %v\n%s", err, out)
	}
	out = deployWait(4, []string{"--reboot", "window", "--window", "0 2 * * *", "--window-length", "1h"}, "downloading", "installing", "waiting-window")
	for _, want := range []string{" installing ", " waiting-window ", "deployment 4: waiting-window: the update is installed; the device reboots into it in its maintenance window, or now with `autopatch-hub devices reboot rpi-7`"} {
		if !strings.Contains(out, want) {
			t.Errorf("deploy --reboot window --wait output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "error:") {
		t.Errorf("deploy --reboot window --wait failed at waiting-window:\n%s", out)
	}
	if out, err := runCLI(t, append([]string{"devices", "show"}, append(view, "rpi-7")...)...); err != nil ||
		!strings.Contains(out, "deployment: 4 app@1.0.0 waiting-window\n            installed; reboots in its maintenance window, or now with `autopatch-hub devices reboot rpi-7`") {
		t.Errorf("devices show at waiting-window: %v\n%s", err, out)
	}
	if out, err := runCLI(t, append([]string{"devices", "reboot"}, append(op, "rpi-7")...)...); err != nil ||
		!strings.Contains(out, "deployment 4 is waiting-window") || strings.Contains(out, "no deployment waits") {
		t.Errorf("devices reboot at waiting-window: %v\n%s", err, out)
	}
	t.Setenv("AUTOPATCH_TOKEN", hubtest.ViewerToken)
	if out, err := runCLI(t, "devices", "list", "--hub", url, "--filter", "online=true"); err != nil || !strings.Contains(out, "rpi-7") {
		t.Errorf("devices list with the token from the environment: %v\n%s", err, out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServe(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hub.yaml")
	os.WriteFile(cfg, []byte("tokens:\n  - name: alice\n    role: admin\n    token: admin-token-0123456789\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-c", cfg, "--data", filepath.Join(dir, "data"), "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"}, &out, &errb)
	}()
	var httpAddr string
	for deadline := time.Now().Add(10 * time.Second); httpAddr == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %s", errb.String())
		}
		if s, ok := strings.CutPrefix(strings.TrimSpace(out.String()), "autopatch-hub: http="); ok {
			httpAddr, _, _ = strings.Cut(s, " ")
		}
	}
	if got, err := runCLI(t, "bundle", "list", "--hub", "http://"+httpAddr, "--token", "admin-token-0123456789"); err != nil {
		t.Errorf("bundle list against serve: %v\n%s", err, got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve returned %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "hub.db")); err != nil {
		t.Errorf("serve left no database in --data: %v", err)
	}
	// A configuration with an unknown field is refused.
	os.WriteFile(cfg, []byte("colour: red\n"), 0o644)
	if err := run(context.Background(), []string{"serve", "-c", cfg}, &out, &errb); err == nil {
		t.Error("serve accepted a configuration with an unknown field")
	}
}
