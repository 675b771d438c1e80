package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/slots"
	"github.com/autopatcher/autopatcher/slots/sim"
)

// refuseTry is a bootloader whose Try always fails.
type refuseTry struct{ *sim.Bootloader }

func (refuseTry) Try(s string) error {
	return fmt.Errorf("try slot %s: %w", s, slots.ErrNoFallback)
}

func simTries(t *testing.T, r *rig, slot string) int {
	t.Helper()
	bs, err := r.boot.State()
	if err != nil {
		t.Fatal(err)
	}
	return bs.Tries[slot]
}

// TestConfirmBeforeInstall: an install (or a download) that takes the
// engine's lock before the daemon's ConfirmBoot still starts from a
// confirmed boot: the running slot's tries are full again.
func TestConfirmBeforeInstall(t *testing.T) {
	ctx := context.Background()
	for _, via := range []string{"install", "prepare"} {
		t.Run(via, func(t *testing.T) {
			r := newRig(t)
			if _, err := r.install(r.engine(), r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(1, 100<<10))}}), InstallOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, status := r.reboot(sim.Default); status != Committed.String() {
				t.Fatalf("1.1.0: %s", status)
			}
			for boot := range 4 {
				r.boot.Reboot() // B counts a try down; the hub's offer wins the lock
				e := r.engine()
				v := fmt.Sprintf("1.1.%d", boot+1)
				p := r.build(spec{name: "apps", version: v, comps: []comp{pkg("app", v, map[string]string{"bin/app": v})}})
				if via == "install" {
					if _, err := r.install(e, p, InstallOptions{}); err != nil {
						t.Fatalf("boot %d: install: %v", boot, err)
					}
				} else {
					d, err := e.Prepare(ctx, signedOf(t, p), DownloadOptions{})
					if err != nil {
						t.Fatalf("boot %d: prepare: %v", boot, err)
					}
					d.Close()
					if err := e.CancelDownload("", "test"); err != nil {
						t.Fatal(err)
					}
				}
				if got := simTries(t, r, "B"); got != sim.DefaultTries {
					t.Errorf("boot %d: tries of B = %d after %s, want %d", boot, got, via, sim.DefaultTries)
				}
				if err := e.ConfirmBoot(ctx); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestConfirmAfterRollback: back on the old slot after a failed trial, that
// slot is confirmed (full tries), with or without ConfirmBoot.
func TestConfirmAfterRollback(t *testing.T) {
	ctx := context.Background()
	for _, confirm := range []bool{true, false} {
		t.Run(fmt.Sprintf("confirmboot=%v", confirm), func(t *testing.T) {
			r := newRig(t)
			r.health = failHealth{}
			if _, err := r.install(r.engine(), r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(1, 100<<10))}}), InstallOptions{}); err != nil {
				t.Fatal(err)
			}
			r.reboot(sim.Default) // trial fails: B marked bad, reboot
			r.boot.Reboot()       // back on A, one try spent
			e := r.engine()
			if confirm {
				if err := e.ConfirmBoot(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			if st := r.state(e).State; st != RolledBack {
				t.Fatalf("state %s, want rolled-back", st)
			}
			if got := simTries(t, r, "A"); got != sim.DefaultTries {
				t.Errorf("tries of A = %d after the rollback, want %d", got, sim.DefaultTries)
			}
		})
	}
}

// TestTryFailureEnds: an update whose bootloader try is refused ends
// abandoned with the reason, instead of staying written.
func TestTryFailureEnds(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.bl = refuseTry{r.boot}
	e := r.engine()
	out, err := r.install(e, r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(1, 100<<10))}}), InstallOptions{})
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	rec := r.state(e)
	if rec.State != Abandoned || out.State != Abandoned {
		t.Fatalf("state %s (outcome %s), want abandoned", rec.State, out.State)
	}
	if rec.Last == nil || !strings.Contains(rec.Last.Reason, "no other bootable slot") {
		t.Errorf("last result %+v, want the try's failure as reason", rec.Last)
	}
	if status, err := e.Resume(ctx); err != nil || status != Abandoned.String() {
		t.Errorf("Resume = %q, %v; want abandoned, no error", status, err)
	}
	if r.reboots != 0 {
		t.Errorf("reboots = %d, want 0", r.reboots)
	}
}

// uboot is a board with the real U-Boot backend (RAUC scheme) over an env
// file, whose boot script is played by boot.
type uboot struct {
	r       *rig
	env     string
	cmdline string
	sc      *slots.Config
	bootN   int
}

func newUBootRig(t *testing.T) *uboot {
	r := newRig(t)
	u := &uboot{r: r, env: filepath.Join(r.dir, "uboot.env"), cmdline: filepath.Join(r.dir, "cmdline")}
	b, err := slots.EncodeEnv(slots.Env{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}, 0x4000, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(u.env, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fw := filepath.Join(r.dir, "fw_env.config")
	if err := os.WriteFile(fw, []byte(u.env+" 0x0000 0x4000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u.sc, err = slots.ParseConfig([]byte(fmt.Sprintf(`
bootloader:
  type: uboot
  uboot: {fw_env_config: %[1]s/fw_env.config, scheme: rauc}
slots:
  rootfs:
    a: {device: "%[1]s/rootfs-a.img", type: file, size: 512M}
    b: {device: "%[1]s/rootfs-b.img", type: file, size: 512M}
paths: {cmdline: %[1]s/cmdline}
`, r.dir)))
	if err != nil {
		t.Fatal(err)
	}
	u.boot()
	return u
}

func (u *uboot) store() *slots.EnvStore {
	s, err := slots.OpenEnvStore(filepath.Join(u.r.dir, "fw_env.config"), "")
	if err != nil {
		u.r.t.Fatal(err)
	}
	return s
}

// boot does what targets/armv7/boot.cmd does: the first slot of
// BOOT_ORDER with tries left loses one and boots.
func (u *uboot) boot() string {
	var booted string
	err := u.store().Update(func(env slots.Env) error {
		order := strings.Fields(env["BOOT_ORDER"])
		for range 2 {
			for _, s := range order {
				if n, _ := strconv.Atoi(env["BOOT_"+s+"_LEFT"]); n > 0 {
					env["BOOT_"+s+"_LEFT"] = strconv.Itoa(n - 1)
					booted = s
					return nil
				}
			}
			for _, s := range []string{"A", "B"} {
				env["BOOT_"+s+"_LEFT"] = "3"
			}
		}
		return errors.New("nothing to boot")
	})
	if err != nil {
		u.r.t.Fatal(err)
	}
	u.bootN++
	os.WriteFile(u.cmdline, []byte("console=ttyAMA0 rauc.slot="+booted), 0o644)
	return booted
}

func (u *uboot) vars() slots.Env {
	env, err := u.store().Read()
	if err != nil {
		u.r.t.Fatal(err)
	}
	return env
}

func (u *uboot) engine() *Engine {
	bl, err := slots.NewUBoot(u.sc)
	if err != nil {
		u.r.t.Fatal(err)
	}
	n := u.bootN
	e, err := New(u.r.cfg, Options{
		Slots: u.sc, Bootloader: bl,
		BootID:   func() (string, error) { return strconv.Itoa(n), nil },
		Rebooter: rebootRecorder{u.r}, Health: u.r.health,
		Now: func() time.Time { return u.r.now }, Trust: u.r.trust,
	})
	if err != nil {
		u.r.t.Fatal(err)
	}
	return e
}

// daemon starts as autopatchd does after a boot; when first is set, an
// install runs before ConfirmBoot (it won the lock).
func (u *uboot) daemon(first func(e *Engine)) (*Engine, string) {
	ctx := context.Background()
	e := u.engine()
	if first != nil {
		first(e)
	}
	if err := e.ConfirmBoot(ctx); err != nil {
		u.r.t.Fatal(err)
	}
	status, err := e.Resume(ctx)
	if err != nil {
		u.r.t.Fatalf("resume: %v", err)
	}
	return e, status
}

func TestUBootConfirm(t *testing.T) {
	ctx := context.Background()
	t.Run("install first after every boot", func(t *testing.T) {
		u := newUBootRig(t)
		r := u.r
		install := func(e *Engine, p string) Outcome {
			t.Helper()
			out, err := r.install(e, p, InstallOptions{})
			if err != nil {
				t.Fatalf("install: %v (env %v)", err, u.vars())
			}
			return out
		}
		u.daemon(func(e *Engine) {
			install(e, r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(1, 100<<10))}}))
		})
		if got := u.boot(); got != "B" {
			t.Fatalf("booted %s, want the trial of B", got)
		}
		if _, status := u.daemon(nil); status != Committed.String() {
			t.Fatalf("1.1.0: %s", status)
		}
		for boot := range 4 {
			u.boot()
			v := fmt.Sprintf("1.1.%d", boot+1)
			u.daemon(func(e *Engine) {
				install(e, r.build(spec{name: "apps", version: v, comps: []comp{pkg("app", v, map[string]string{"bin/app": v})}}))
				if got := u.vars()["BOOT_B_LEFT"]; got != "3" {
					t.Errorf("boot %d: BOOT_B_LEFT = %s after the install, want 3", boot, got)
				}
			})
		}
		u.boot()
		var out Outcome
		u.daemon(func(e *Engine) {
			out = install(e, r.build(spec{version: "1.2.0", comps: []comp{image("rootfs", "1.2.0", randomBytes(2, 100<<10))}}))
		})
		if out.Status != StatusRebooting {
			t.Errorf("1.2.0: %s, want rebooting", out.Status)
		}
		if env := u.vars(); env["BOOT_ORDER"] != "A B" || env["BOOT_A_LEFT"] != "1" || env["BOOT_B_LEFT"] != "3" {
			t.Errorf("env %v, want A tried once with B (3 tries) behind", env)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		u := newUBootRig(t)
		r := u.r
		r.health = failHealth{}
		u.daemon(nil)
		if _, err := r.install(u.engine(), r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(1, 100<<10))}}), InstallOptions{}); err != nil {
			t.Fatal(err)
		}
		u.boot()      // B on trial
		u.daemon(nil) // checks fail: B bad, reboot
		if got := u.boot(); got != "A" {
			t.Fatalf("booted %s, want A", got)
		}
		e, status := u.daemon(nil)
		if status != RolledBack.String() || r.state(e).State != RolledBack {
			t.Fatalf("status %s, want rolled-back", status)
		}
		if env := u.vars(); env["BOOT_ORDER"] != "A" || env["BOOT_A_LEFT"] != "3" {
			t.Errorf("env %v, want A alone with 3 tries", env)
		}
	})
	t.Run("try refused", func(t *testing.T) {
		u := newUBootRig(t)
		r := u.r
		u.daemon(nil)
		e := u.engine()
		if _, err := r.install(e, r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(1, 100<<10))}}), InstallOptions{NoAdvance: true}); err != nil {
			t.Fatal(err)
		}
		// Someone spends A's tries behind the engine's back: Try(B) has no fallback.
		if err := u.store().Update(func(env slots.Env) error { env["BOOT_A_LEFT"] = "0"; return nil }); err != nil {
			t.Fatal(err)
		}
		status, err := e.Resume(ctx)
		if err != nil || status != Abandoned.String() {
			t.Fatalf("Resume = %q, %v; want abandoned", status, err)
		}
		rec := r.state(e)
		if rec.Last == nil || !strings.Contains(rec.Last.Reason, "no other bootable slot") {
			t.Errorf("last %+v, want the refused try as reason", rec.Last)
		}
		if status, err := e.Resume(ctx); err != nil || status != Abandoned.String() {
			t.Errorf("second Resume = %q, %v", status, err)
		}
	})
}

// TestConfirmAfterUnconfirmedBoots: the committed slot booted until its
// tries ran out without the daemon confirming any of those boots (it
// crashed, or power was cut early each time). The bootloader now reports
// the running boot like a trial; it is still the slot in use, so the
// daemon refills its tries and neither marks it bad nor reboots.
func TestConfirmAfterUnconfirmedBoots(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	if _, err := r.install(r.engine(), r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", randomBytes(1, 100<<10))}}), InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, status := r.reboot(sim.Default); status != Committed.String() {
		t.Fatalf("1.1.0: %s", status)
	}
	for range sim.DefaultTries {
		if booted, err := r.boot.Reboot(); err != nil || booted != "B" {
			t.Fatalf("Reboot() = %q, %v; want B", booted, err)
		}
	}
	if got := simTries(t, r, "B"); got != 0 {
		t.Fatalf("tries of B after %d unconfirmed boots = %d, want 0", sim.DefaultTries, got)
	}
	r.mu.Lock()
	reboots := r.reboots
	r.mu.Unlock()
	if err := r.engine().ConfirmBoot(ctx); err != nil {
		t.Fatalf("ConfirmBoot: %v", err)
	}
	r.mu.Lock()
	if r.reboots != reboots {
		t.Errorf("ConfirmBoot rebooted %d times, want none", r.reboots-reboots)
	}
	r.mu.Unlock()
	bs, err := r.boot.State()
	if err != nil {
		t.Fatal(err)
	}
	if bs.Primary != "B" || bs.Tries["B"] != sim.DefaultTries || len(bs.Bad) != 0 {
		t.Errorf("after ConfirmBoot: primary %s, tries of B %d, bad %v; want B, %d, none", bs.Primary, bs.Tries["B"], bs.Bad, sim.DefaultTries)
	}
}
