package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/device"
	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
)

// The tests here drive the real device agent's hub-dependent paths from the
// hub: reboot policy "hub" and the reboot command, cancel, and report, over
// the HTTP API with its roles.

// cmdFleet is a hub with one accepted simulated board and bundle os@1.1.0 of img.
func cmdFleet(t *testing.T, img []byte) (*fleet, *board) {
	t.Helper()
	key, vpub, pub := hubtest.Key(t)
	trust := &bundle.Trust{Keys: []bundle.PublicKey{vpub}}
	f := startFleet(t, pub)
	upload(t, f.server(), buildBundle(t, key, "1.1.0", 2, bundle.CompressionNone, img), trust)
	b := newBoard(t, trust)
	first := b.runDaemon(f, "sim-1", b.engine(), nil) // first contact: pending
	accept(t, f.server(), "sim-1")
	first.stop()
	return f, b
}

func deployState(t *testing.T, f *fleet, id int64) string {
	t.Helper()
	d, err := f.server().Hub.Store().Deployment(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d.State
}

func factoryUntouched(t *testing.T, b *board) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(b.dir, "rootfs-a.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte("factory "), 4096)) {
		t.Errorf("the running slot A changed")
	}
	bs, err := b.boot.State()
	if err != nil {
		t.Fatal(err)
	}
	if bs.Primary != "A" || bs.Pending != "" {
		t.Errorf("boot state primary %q pending %q, want A and no try", bs.Primary, bs.Pending)
	}
}

// TestAgentRebootHub: deploy with reboot policy "hub"; the device installs,
// sets its trial slot and waits (deployment "waiting-reboot"); a viewer may
// not reboot it; the operator's reboot command reboots it into the trial,
// which commits.
func TestAgentRebootHub(t *testing.T) {
	ctx := context.Background()
	img := hubtest.Payload(81, 1<<20)
	f, b := cmdFleet(t, img)
	api := newAPIClient(t, f.server())

	e := b.engine()
	d := b.runDaemon(f, "sim-1", e, nil)
	code, body := api.do("POST", "/api/v1/deployments", hubtest.OperatorToken,
		[]byte(`{"bundle":"os","version":"1.1.0","device":"sim-1","reboot":"hub"}`))
	if code != 201 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	var dep hub.Deployment
	if err := json.Unmarshal([]byte(body), &dep); err != nil {
		t.Fatal(err)
	}
	if len(dep.Steps) != 1 || dep.Steps[0].Detail != "reboot=hub" {
		t.Errorf("first step %+v, want offered with detail reboot=hub", dep.Steps)
	}
	waitFor(t, "deployment waiting-reboot", func() bool { return deployState(t, f, dep.ID) == hub.DeployWaitingReboot })
	if st, _ := e.Status(); st.State != device.Rebooting {
		t.Errorf("device engine %s, want %s (installed, waiting for the hub)", st.State, device.Rebooting)
	}
	if n := b.reboots.Load(); n != 0 {
		t.Fatalf("the board rebooted %d times before the hub said so", n)
	}
	code, body = api.do("GET", "/api/v1/devices/sim-1", hubtest.ViewerToken, nil)
	if code != 200 || !strings.Contains(body, `"state": "waiting-reboot"`) {
		t.Errorf("device show: %d, want its deployment waiting-reboot:\n%s", code, body)
	}

	for _, path := range []string{"/api/v1/devices/sim-1/reboot", fmt.Sprintf("/api/v1/deployments/%d/cancel", dep.ID)} {
		if code, body := api.do("POST", path, hubtest.ViewerToken, nil); code != 403 {
			t.Errorf("viewer POST %s: %d %s, want 403", path, code, body)
		}
	}
	if got := deployState(t, f, dep.ID); got != hub.DeployWaitingReboot {
		t.Errorf("after the viewer's attempts the deployment is %s", got)
	}
	if n := b.reboots.Load(); n != 0 {
		t.Errorf("a viewer's request rebooted the board")
	}

	code, body = api.do("POST", "/api/v1/devices/sim-1/reboot", hubtest.OperatorToken, nil)
	if code != 202 {
		t.Fatalf("operator reboot: %d %s", code, body)
	}
	var res hub.CommandResult
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	if res.Op != "reboot" || res.Deployment != dep.ID || res.State != hub.DeployWaitingReboot || !res.Online {
		t.Errorf("reboot answer %+v", res)
	}
	b.runDaemon(f, "sim-1", b.rebootCommitted(ctx, d, 1), nil)
	if got, want := steps(t, f.server(), dep.ID), "offered downloading installing waiting-reboot rebooting committed succeeded"; got != want {
		t.Errorf("hub recorded %q, want %q", got, want)
	}
	slotHolds(t, b, "b", img)
	d2, _ := f.server().Hub.Store().Deployment(ctx, dep.ID)
	for _, st := range d2.Steps {
		if st.State == "rebooting" && !strings.Contains(st.Detail, res.ID) {
			t.Errorf("rebooting step %q does not name command %s", st.Detail, res.ID)
		}
	}
	audit := auditActions(t, f)
	for _, want := range []string{"oscar deploy sim-1", "oscar reboot sim-1"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %q:\n%s", want, audit)
		}
	}
	if strings.Contains(audit, "victor") {
		t.Errorf("audit log records the viewer's refused calls:\n%s", audit)
	}
}

func auditActions(t *testing.T, f *fleet) string {
	t.Helper()
	es, err := f.server().Hub.Store().Audit(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.VerifyAudit(es); err != nil {
		t.Errorf("audit log: %v", err)
	}
	var lines []string
	for _, e := range es {
		lines = append(lines, e.Actor+" "+e.Action+" "+e.Target+" "+e.Detail)
	}
	return strings.Join(lines, "\n")
}

// TestAgentCancel: a deployment cancelled mid-download ends "cancelled"; the
// device stops, abandons the download and leaves the running slot and the
// boot order as they were. A deployment cancelled while it waits for the
// hub's reboot is abandoned on the device too.
func TestAgentCancel(t *testing.T) {
	ctx := context.Background()
	t.Run("mid-download", func(t *testing.T) {
		img := hubtest.Payload(91, 4<<20)
		f, b := cmdFleet(t, img)
		api := newAPIClient(t, f.server())
		e := b.engine()
		depID := make(chan int64, 1)
		var once sync.Once
		cancelled := make(chan struct{})
		var total atomic.Int64
		b.runDaemon(f, "sim-1", e, func(_, _ string, done, n int) {
			total.Store(int64(n))
			if done >= n/3 {
				// On the fetching goroutine, so the download cannot finish
				// before the hub has withdrawn the offer (it refuses every
				// chunk request after that).
				once.Do(func() {
					defer close(cancelled)
					id := <-depID
					if code, body := api.do("POST", fmt.Sprintf("/api/v1/deployments/%d/cancel", id), hubtest.OperatorToken, nil); code != 200 {
						t.Errorf("cancel: %d %s", code, body)
					}
				})
			}
		})
		dep, err := f.server().Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "os", Version: "1.1.0", Device: "sim-1"})
		if err != nil {
			t.Fatal(err)
		}
		depID <- dep.ID
		<-cancelled
		if got := deployState(t, f, dep.ID); got != hub.DeployCancelled {
			t.Errorf("deployment %s, want cancelled", got)
		}
		waitFor(t, "device to abandon the download", func() bool {
			st, err := e.Status()
			return err == nil && st.State != device.Downloading && st.Bundle == nil && st.Last != nil
		})
		st, _ := e.Status()
		if st.State != device.Abandoned || st.Last.State != device.Abandoned {
			t.Errorf("device %s, last result %s (%s), want abandoned", st.State, st.Last.State, st.Last.Reason)
		}
		factoryUntouched(t, b)
		if n := b.reboots.Load(); n != 0 {
			t.Errorf("board rebooted %d times", n)
		}
		if sent, n := f.chunksSent(), uint64(total.Load()); sent >= n {
			t.Errorf("hub sent %d of %d chunks; the cancel did not stop the transfer", sent, n)
		}
		if got, want := steps(t, f.server(), dep.ID), "offered downloading cancelled"; got != want {
			t.Errorf("hub recorded %q, want %q", got, want)
		}
		if code, body := api.do("POST", fmt.Sprintf("/api/v1/deployments/%d/cancel", dep.ID), hubtest.OperatorToken, nil); code != 409 {
			t.Errorf("cancelling a cancelled deployment: %d %s, want 409", code, body)
		}
		if a := auditActions(t, f); !strings.Contains(a, fmt.Sprintf("oscar cancel sim-1 deployment=%d", dep.ID)) {
			t.Errorf("audit log lacks the cancel:\n%s", a)
		}
	})
	t.Run("waiting-reboot", func(t *testing.T) {
		f, b := cmdFleet(t, hubtest.Payload(92, 1<<20))
		e := b.engine()
		b.runDaemon(f, "sim-1", e, nil)
		dep, err := f.server().Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "os", Version: "1.1.0", Device: "sim-1", Reboot: "hub"})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "deployment waiting-reboot", func() bool { return deployState(t, f, dep.ID) == hub.DeployWaitingReboot })
		got, err := f.server().Hub.Cancel(ctx, "oscar", dep.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != hub.DeployCancelled {
			t.Errorf("deployment %s, want cancelled", got.State)
		}
		waitFor(t, "device to abandon the installed update", func() bool {
			st, err := e.Status()
			return err == nil && st.State != device.Rebooting && st.Bundle == nil
		})
		factoryUntouched(t, b)
		// A reboot command now finds nothing waiting: the board stays up.
		if _, err := f.server().Hub.Reboot(ctx, "oscar", "sim-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.server().Hub.Report(ctx, "oscar", "sim-1"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "inventory reported after the commands", func() bool {
			d, err := f.server().Hub.Store().Device(ctx, "sim-1")
			return err == nil && d.Inventory.Booted == "A"
		})
		if n := b.reboots.Load(); n != 0 {
			t.Errorf("board rebooted %d times", n)
		}
	})
}

// TestAgentReport: the report command makes the device publish its
// inventory again at once (its periodic Hello is 15 minutes away).
func TestAgentReport(t *testing.T) {
	ctx := context.Background()
	f, b := cmdFleet(t, hubtest.Payload(93, 64<<10))
	b.runDaemon(f, "sim-1", b.engine(), nil)
	s := f.server()
	waitFor(t, "first inventory", func() bool {
		d, err := s.Hub.Store().Device(ctx, "sim-1")
		return err == nil && d.Online && d.Inventory.Booted == "A"
	})
	if err := s.Hub.Store().UpdateDevice(ctx, "sim-1", func(d *hub.Device) error {
		d.Inventory = hub.Inventory{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	api := newAPIClient(t, s)
	if code, body := api.do("POST", "/api/v1/devices/sim-1/report", hubtest.ViewerToken, nil); code != 403 {
		t.Errorf("viewer report: %d %s, want 403", code, body)
	}
	if code, body := api.do("POST", "/api/v1/devices/sim-1/report", hubtest.OperatorToken, nil); code != 202 {
		t.Fatalf("report: %d %s", code, body)
	}
	waitFor(t, "inventory reported again", func() bool {
		d, err := s.Hub.Store().Device(ctx, "sim-1")
		return err == nil && d.Inventory.Booted == "A"
	})
	if code, _ := api.do("POST", "/api/v1/devices/nobody/report", hubtest.OperatorToken, nil); code != 404 {
		t.Errorf("report to an unknown device: %d, want 404", code)
	}
}

// TestAgentRebootWindow: with reboot policy "window" and a window that is
// closed now, the device installs and waits ("waiting-window"); the hub's
// reboot command reboots it before the window, and the trial commits.
func TestAgentRebootWindow(t *testing.T) {
	ctx := context.Background()
	img := hubtest.Payload(94, 512<<10)
	f, b := cmdFleet(t, img)
	e := b.engine()
	d := b.runDaemon(f, "sim-1", e, nil)
	closed := fmt.Sprintf("0 %d * * *", (time.Now().Hour()+12)%24) // twelve hours away, in the device's zone
	dep, err := f.server().Hub.DeployWith(ctx, "oscar", hub.DeployRequest{Bundle: "os", Version: "1.1.0", Device: "sim-1",
		Reboot: "window", Window: closed, WindowLength: 60})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deployment waiting-window", func() bool { return deployState(t, f, dep.ID) == hub.DeployWaitingWindow })
	if n := b.reboots.Load(); n != 0 {
		t.Fatalf("the board rebooted outside its window")
	}
	res, err := f.server().Hub.Reboot(ctx, "oscar", "sim-1")
	if err != nil {
		t.Fatal(err)
	}
	if res.State != hub.DeployWaitingWindow {
		t.Errorf("reboot answer state %q, want waiting-window", res.State)
	}
	b.runDaemon(f, "sim-1", b.rebootCommitted(ctx, d, 1), nil)
	if got, want := steps(t, f.server(), dep.ID), "offered downloading installing waiting-window rebooting committed succeeded"; got != want {
		t.Errorf("hub recorded %q, want %q", got, want)
	}
	slotHolds(t, b, "b", img)
	first, _ := f.server().Hub.Store().Deployment(ctx, dep.ID)
	if want := fmt.Sprintf("reboot=window window=%q length=60s", closed); first.Steps[0].Detail != want {
		t.Errorf("offered step detail %q, want %q", first.Steps[0].Detail, want)
	}
}
