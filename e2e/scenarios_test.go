//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/device"
	"github.com/autopatcher/autopatcher/e2e/disk"
)

const hardwareID = "qemu-armv7"

// guestFiles are the configuration files every autopatchd image carries.
func (r *rig) guestFiles(t *testing.T, autopatchd, pub []byte) (map[string][]byte, map[string]string) {
	t.Helper()
	fwEnv, slotsYAML := r.boardFiles(t)
	files := map[string][]byte{
		"bin/autopatchd":                  autopatchd,
		"etc/fw_env.config":               fwEnv,
		"etc/autopatcher/slots.yaml":      slotsYAML,
		"etc/autopatcher/device.yaml":     []byte(deviceYAML),
		"etc/autopatcher/keys/vendor.pub": pub,
	}
	links := map[string]string{
		"bin/reboot":                                    "/init",
		"etc/autopatcher/health.d/50-app":               "/init",
		"etc/autopatcher/hooks/post-commit.d/50-report": "/init",
		"etc/autopatcher/hooks/on-rollback.d/50-report": "/init",
	}
	return files, links
}

// deviceYAML is autopatchd's config inside the guest.
const deviceYAML = `# autopatchd on the armv7 QEMU target
data_dir: /data/autopatcher
slots: /etc/autopatcher/slots.yaml
hardware_id: ` + hardwareID + `
trust:
  keys: [/etc/autopatcher/keys/vendor.pub]
health:
  deadline: 10s
  dir: /etc/autopatcher/health.d
  timeout: 5s
hooks:
  dir: /etc/autopatcher/hooks
  timeout: 10s
watchdog:
  device: /dev/watchdog
  timeout: 4s
  systemd: false
reboot:
  policy: now
  command: [/bin/reboot]
`

// boardFiles returns targets/armv7/fw_env.config and slots.yaml, or the
// equivalent built-in defaults when the board files are not there.
func (r *rig) boardFiles(t *testing.T) (fwEnv, slotsYAML []byte) {
	t.Helper()
	var err error
	if fwEnv, err = os.ReadFile(filepath.Join(r.root, "targets", "armv7", "fw_env.config")); err != nil {
		fwEnv = []byte("/boot/uboot.env 0x0000 0x4000\n")
	}
	if slotsYAML, err = os.ReadFile(filepath.Join(r.root, "targets", "armv7", "slots.yaml")); err != nil {
		slotsYAML = []byte(`bootloader:
  type: uboot
  uboot:
    fw_env_config: /etc/fw_env.config
    mirror: /boot/uboot-redund.env
    scheme: rauc
    tries: 3
slots:
  rootfs:
    a: {device: /dev/vda2, type: block}
    b: {device: /dev/vda3, type: block}
`)
	}
	return fwEnv, slotsYAML
}

// release is one version of the system image.
type release struct {
	version string
	role    string
	health  string
	pad     int // extra bytes of incompressible filler in the image
	slot    string
	bundle  string // data partition file name
}

func (r *rig) buildRelease(t *testing.T, rel *release, files map[string][]byte, links map[string]string) {
	t.Helper()
	fs := map[string][]byte{}
	for k, v := range files {
		fs[k] = v
	}
	if rel.pad > 0 {
		// Incompressible, so the initramfs and the slot image really grow.
		b := make([]byte, rel.pad)
		_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
		fs["etc/filler"] = b
	}
	ird, err := r.initramfs(guest{Role: rel.role, Version: rel.version, Health: rel.health,
		Params: "softdog soft_margin=4\n", Files: fs, Links: links})
	if err != nil {
		t.Fatal(err)
	}
	if rel.slot, err = r.slotImage("rootfs-"+rel.version, ird); err != nil {
		t.Fatal(err)
	}
}

func buildBundle(t *testing.T, out string, key crypto.Signer, rel *release, secver uint64) {
	t.Helper()
	f, err := os.Open(rel.slot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := &bundle.Manifest{
		Name: "armv7-system", Version: rel.version, SecurityVersion: secver,
		Compatible: []string{hardwareID}, Created: time.Now().Unix(), Severity: bundle.SeverityNormal,
		Description: "armv7 QEMU system image " + rel.version,
		Components: []bundle.Component{{
			Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: rel.version,
			Compression: bundle.CompressionZstd,
		}},
	}
	var buf bytes.Buffer
	if err := bundle.Build(context.Background(), &buf, m, []io.Reader{f}, []crypto.Signer{key}, bundle.BuildOptions{TempDir: filepath.Dir(out)}); err != nil {
		t.Fatalf("build bundle %s: %v", rel.version, err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// withData extracts the ext4 data partition of img, replays its journal
// (the guest was killed, so committed metadata may sit only in the journal,
// which debugfs does not read) and runs fn on the extracted file system.
func withData(t *testing.T, img string, fn func(fs string)) {
	t.Helper()
	p, _ := disk.Find(disk.Layout(), disk.PartData)
	fs := filepath.Join(t.TempDir(), "data.ext4")
	if err := disk.Extract(img, p, fs); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fy", "-E", "journal_only", fs).CombinedOutput(); err != nil {
		// Exit status 1 means "fixed" (journal replayed): fine.
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck data partition: %v: %s", err, out)
		}
	}
	fn(fs)
}

// putData copies files into the root of the data partition of img
// (debugfs, no mounts), replacing files of the same name.
func putData(t *testing.T, img string, files map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	p, _ := disk.Find(disk.Layout(), disk.PartData)
	withData(t, img, func(fs string) {
		for name, b := range files {
			src := filepath.Join(dir, name)
			if err := os.WriteFile(src, b, 0o644); err != nil {
				t.Fatal(err)
			}
			_ = exec.Command("debugfs", "-w", "-R", "rm /"+name, fs).Run()
			out, err := exec.Command("debugfs", "-w", "-R", "write "+src+" /"+name, fs).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Allocated inode") {
				t.Fatalf("debugfs write %s: %v: %s", name, err, out)
			}
		}
		if err := disk.Insert(img, p, fs); err != nil {
			t.Fatal(err)
		}
	})
}

// getData reads one file of the data partition of img (nil if missing).
func getData(t *testing.T, img, name string) []byte {
	t.Helper()
	var b []byte
	withData(t, img, func(fs string) {
		dst := filepath.Join(t.TempDir(), "out")
		if err := exec.Command("debugfs", "-R", "dump /"+name+" "+dst, fs).Run(); err != nil {
			return
		}
		b, _ = os.ReadFile(dst)
	})
	return b
}

// lastResult returns "state:version" of the last result.
func lastResult(s device.Record) string {
	if s.Last == nil {
		return ""
	}
	return s.Last.State.String() + ":" + s.Last.Bundle.Version
}

// readState decodes autopatchd's state.json from the data partition of img
// (the zero Record when it is missing).
func readState(t *testing.T, img string) device.Record {
	t.Helper()
	b := getData(t, img, "autopatcher/state.json")
	var s device.Record
	if len(b) > 0 {
		if err := json.Unmarshal(b, &s); err != nil {
			t.Errorf("decode state.json: %v", err)
		}
	}
	return s
}

// bootRecord is one Linux boot seen on the console.
type bootRecord struct {
	slot, version string
	text          string // console lines of this boot
}

// splitBoots cuts a console log into Linux boots at guestinit's first line.
func splitBoots(log string) []bootRecord {
	var out []bootRecord
	idx := regexp.MustCompile(`AP-E2E \[\s*\d+\.\d+\] init started`).FindAllStringIndex(log, -1)
	for i, loc := range idx {
		end := len(log)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		text := log[loc[0]:end]
		b := bootRecord{text: text}
		if m := reBooted.FindStringSubmatch(text); m != nil {
			b.slot, b.version = m[2], m[3]
		}
		out = append(out, b)
	}
	return out
}

// Console markers of autopatchd (its log lines, prefixed by guestinit).
var (
	markCommitted = regexp.MustCompile(`state changed: \S+ -> committed`)
	markRollback  = regexp.MustCompile(`state changed: \S+ -> rolled-back`)
	markWriting   = regexp.MustCompile(`install journal created`)
)

// run boots img until until(log) holds (then lets the guest settle for
// settle and kills QEMU) or timeout passes.
func (r *rig) run(t *testing.T, img, name string, timeout, settle time.Duration, until func(log string) bool) string {
	t.Helper()
	logPath := filepath.Join(r.work, name+".log")
	r.keepLog(t, logPath)
	v, err := r.boot(img, logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer v.kill()
	_, werr := v.waitFor(timeout, func(string) bool { return until(v.text()) })
	if werr != nil {
		report(t, false, "%s: waiting for the scenario's end: %v", name, werr)
	} else if settle > 0 {
		time.Sleep(settle)
	}
	v.kill()
	_ = v.wait(10 * time.Second)
	return v.text()
}

func seq(bs []bootRecord) string {
	var s []string
	for _, b := range bs {
		s = append(s, b.slot+"/"+b.version)
	}
	return strings.Join(s, " ")
}

// TestAutopatchd runs the update scenarios of the armv7 target with the
// real autopatchd inside the guest, on one disk whose state carries over
// from scenario to scenario.
func TestAutopatchd(t *testing.T) {
	r := getRig(t)
	if _, err := os.Stat(filepath.Join(r.root, "cmd", "autopatchd", "main.go")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("cmd/autopatchd has no main.go")
		}
		t.Skip("cmd/autopatchd not there yet")
	}
	ad, err := r.goBuild("./cmd/autopatchd", "autopatchd")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("INFO  autopatchd linux/arm GOARM=7 binary: %.2f MiB\n", float64(len(ad))/(1<<20))
	key, err := bundle.GenerateKey(bundle.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.MarshalPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	files, links := r.guestFiles(t, ad, pub)
	v1 := &release{version: "1.0.0", role: "autopatchd", health: "ok"}
	v2 := &release{version: "2.0.0", role: "autopatchd", health: "ok", bundle: "v2.apb"}
	v3 := &release{version: "3.0.0", role: "autopatchd", health: "fail", bundle: "v3.apb"}
	v4 := &release{version: "4.0.0", role: "autopatchd-hang", health: "ok", bundle: "v4.apb"}
	v5 := &release{version: "5.0.0", role: "autopatchd", health: "ok", pad: 10 << 20, bundle: "v5.apb"}
	data := map[string][]byte{}
	for i, rel := range []*release{v1, v2, v3, v4, v5} {
		r.buildRelease(t, rel, files, links)
		if rel.bundle != "" {
			out := filepath.Join(r.work, rel.bundle)
			buildBundle(t, out, key, rel, uint64(i+1))
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			data[rel.bundle] = b
		}
	}
	img, err := r.diskImage("autopatchd", v1.slot, "", data)
	if err != nil {
		t.Fatal(err)
	}
	ok := true

	ok = ok && t.Run("1-update-commit", func(t *testing.T) {
		putData(t, img, map[string][]byte{"e2e-queue": installQueue("v2.apb")})
		log := r.run(t, img, "s1-update", 4*time.Minute, 3*time.Second, func(log string) bool {
			bs := splitBoots(log)
			return len(bs) >= 2 && bs[len(bs)-1].slot == "B" && markCommitted.MatchString(bs[len(bs)-1].text)
		})
		bs := splitBoots(log)
		report(t, seq(bs) == "A/1.0.0 B/2.0.0", "booted A (1.0.0), installed 2.0.0 into B, U-Boot tried B: %q", seq(bs))
		if len(bs) == 2 {
			report(t, markCommitted.MatchString(bs[1].text), "health checks passed on B and autopatchd committed it")
			boottime(bs[1], log)
		}
		p, rd := r.readEnvFiles(t, img)
		report(t, strings.HasPrefix(p["BOOT_ORDER"], "B") && p["BOOT_B_LEFT"] == "3" && fmt.Sprint(p) == fmt.Sprint(rd),
			"env on disk (what U-Boot reads next): uboot.env %v, uboot-redund.env %v", p, rd)
		st := readState(t, img)
		report(t, st.State == device.Committed && lastResult(st) == "committed:2.0.0" && st.Installed["rootfs"] == "2.0.0",
			"state.json: state %s, last %s, rootfs %s", st.State, lastResult(st), st.Installed["rootfs"])
	})

	ok = ok && t.Run("2-health-fail-rollback", func(t *testing.T) {
		putData(t, img, map[string][]byte{"e2e-queue": installQueue("v3.apb")})
		log := r.run(t, img, "s2-healthfail", 4*time.Minute, 3*time.Second, func(log string) bool {
			bs := splitBoots(log)
			return len(bs) >= 3 && bs[len(bs)-1].slot == "B" && markRollback.MatchString(bs[len(bs)-1].text)
		})
		bs := splitBoots(log)
		report(t, len(bs) > 0 && bs[0].slot == "B", "after the commit, U-Boot boots B again: %q", seq(bs))
		report(t, seq(bs) == "B/2.0.0 A/3.0.0 B/2.0.0", "v3 installed into A, tried, back on B: %q", seq(bs))
		if len(bs) == 3 {
			report(t, strings.Contains(bs[1].text, "health check 50-app: failing") && !markCommitted.MatchString(bs[1].text),
				"v3's health check failed and autopatchd did not commit")
			report(t, markRollback.MatchString(bs[2].text), "back on B, autopatchd reported the rollback")
			report(t, strings.Contains(bs[1].text, "hook on-rollback.d: AP_HOOK=on-rollback.d"), "on-rollback hooks ran on A before the reboot")
		}
		p, _ := r.readEnvFiles(t, img)
		report(t, strings.HasPrefix(p["BOOT_ORDER"], "B"), "env on disk keeps B first: %v", p)
		st := readState(t, img)
		report(t, st.State == device.RolledBack && lastResult(st) == "rolled-back:3.0.0" && st.Installed["rootfs"] == "2.0.0",
			"state.json: state %s, last %s (%s), rootfs %s", st.State, lastResult(st), lastReason(st), st.Installed["rootfs"])
	})

	ok = ok && t.Run("3-hang-watchdog", func(t *testing.T) {
		putData(t, img, map[string][]byte{"e2e-queue": installQueue("v4.apb")})
		log := r.run(t, img, "s3-hang", 4*time.Minute, 3*time.Second, func(log string) bool {
			bs := splitBoots(log)
			return len(bs) >= 3 && bs[len(bs)-1].slot == "B" && markRollback.MatchString(bs[len(bs)-1].text)
		})
		bs := splitBoots(log)
		report(t, seq(bs) == "B/2.0.0 A/4.0.0 B/2.0.0", "v4 installed into A, tried, back on B: %q", seq(bs))
		if len(bs) == 3 {
			report(t, strings.Contains(bs[1].text, "system hung") && strings.Contains(bs[1].text, "softdog"),
				"v4 hung holding the watchdog and softdog reset the machine")
			report(t, markRollback.MatchString(bs[2].text), "back on B, autopatchd reported the rollback")
			report(t, regexp.MustCompile(`hook on-rollback.d: .*AP_REASON=trial of slot A was interrupted`).MatchString(bs[2].text),
				"back on B, the on-rollback hooks ran with the reason")
		}
		if h := hostTime(log, 0, "system hung"); h >= 0 {
			if b := hostTime(log, h, "autopatcher: booting slot B"); b >= 0 {
				fmt.Printf("TIME  hang -> softdog reset -> U-Boot back on B: %.2fs wall (watchdog timeout 4s)", b-h)
				if rb := hostTime(log, b, "-> rolled-back"); rb >= 0 {
					fmt.Printf("; -> rollback recorded on B: %.2fs", rb-h)
				}
				fmt.Println()
			}
		}
		u := ubootChoices(log)
		report(t, len(u) == 3 && strings.HasPrefix(u[1], "A(0,") && strings.HasPrefix(u[2], "B(0,"),
			"after the reset U-Boot fell back to B because A's single try was used up: %v", u)
		st := readState(t, img)
		report(t, st.State == device.RolledBack && lastResult(st) == "rolled-back:4.0.0" && st.Installed["rootfs"] == "2.0.0",
			"state.json: state %s, last %s (%s), rootfs %s", st.State, lastResult(st), lastReason(st), st.Installed["rootfs"])
	})

	ok = ok && t.Run("4-power-cut", func(t *testing.T) {
		before, _ := r.readEnvFiles(t, img)
		putData(t, img, map[string][]byte{"e2e-queue": installQueue("v5.apb")})
		// The write of the 25 MiB slot image takes a few seconds: cut 0.7s in.
		log := r.run(t, img, "s4-powercut", 2*time.Minute, 700*time.Millisecond, markWriting.MatchString)
		report(t, markWriting.MatchString(log) && !strings.Contains(log, "-> written bundle=5.0.0"),
			"power cut (QEMU killed) while v5 was being written into A (install journal present, state not yet written)")
		after, _ := r.readEnvFiles(t, img)
		report(t, strings.HasPrefix(after["BOOT_ORDER"], "B") && after["BOOT_ORDER"] == before["BOOT_ORDER"],
			"env after the cut still boots B: before %v, after %v", before, after)
		putData(t, img, map[string][]byte{"e2e-queue": []byte("sleep 5s\nstatus\n")})
		log = r.run(t, img, "s4-after", 2*time.Minute, 2*time.Second, func(log string) bool {
			return strings.Contains(log, "queue: status exited")
		})
		bs := splitBoots(log)
		report(t, len(bs) >= 1 && bs[0].slot == "B" && bs[0].version == "2.0.0", "after the power cut the board boots B (2.0.0): %q", seq(bs))
		report(t, regexp.MustCompile(`status: last result:\s+abandoned armv7-system 5\.0\.0`).MatchString(log),
			"autopatchd status on B reports the interrupted install as abandoned")
		st := readState(t, img)
		report(t, st.Installed["rootfs"] == "2.0.0" && lastResult(st) == "abandoned:5.0.0",
			"state.json: the cut install is reported abandoned, 2.0.0 stays installed: state %s, last %s (%s), rootfs %s",
			st.State, lastResult(st), lastReason(st), st.Installed["rootfs"])
		p, rd := r.readEnvFiles(t, img)
		report(t, strings.HasPrefix(p["BOOT_ORDER"], "B") && p["BOOT_B_LEFT"] == "3" && fmt.Sprint(p) == fmt.Sprint(rd),
			"env on disk: B first with full tries, both copies equal: %v / %v", p, rd)
	})
	_ = ok
}

// installQueue is the guest's one-shot command queue for installing a
// bundle from the data partition. The install waits until "autopatchd run"
// has confirmed the boot: an install that takes the engine's lock first
// makes the daemon skip refilling the running slot's tries.
func installQueue(name string) []byte {
	return []byte("sleep 3s\ninstall /data/" + name + "\n")
}

func lastReason(s device.Record) string {
	if s.Last == nil {
		return ""
	}
	return s.Last.Reason
}

// boottime prints the time from the kernel starting to autopatchd
// committing the trial slot, and autopatchd's share of it, from the guest's
// clock (CLOCK_BOOTTIME, the kernel's printk clock); and the wall time from
// U-Boot choosing the slot to the commit, from the host's stamps.
func boottime(b bootRecord, log string) {
	var start, commit float64 = -1, -1
	for _, l := range strings.Split(b.text, "\n") {
		m := reStamp.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		var ts float64
		fmt.Sscanf(m[1], "%g", &ts)
		if start < 0 && strings.Contains(m[2], "autopatchd run started") {
			start = ts
		}
		if commit < 0 && markCommitted.MatchString(l) {
			commit = ts
		}
	}
	if start < 0 || commit < 0 {
		fmt.Printf("TIME  kernel start -> commit: markers not found\n")
		return
	}
	fmt.Printf("TIME  kernel start -> autopatchd committed the trial slot: %.2fs (guest clock); autopatchd's share: %.2fs; before autopatchd (kernel, modules, mounts): %.2fs\n",
		commit, commit-start, start)
	// Host stamps: the last "booting slot" before this boot, and the commit.
	var chose, done float64 = -1, -1
	for _, l := range strings.Split(log, "\n") {
		var h float64
		if _, err := fmt.Sscanf(l, "%g", &h); err != nil {
			continue
		}
		if strings.Contains(l, "autopatcher: booting slot "+b.slot) && done < 0 {
			chose = h
		}
		if markCommitted.MatchString(l) && chose >= 0 && done < 0 {
			done = h
		}
	}
	if chose >= 0 && done >= 0 {
		fmt.Printf("TIME  U-Boot chose slot %s -> committed: %.2fs wall (TCG, includes kernel decompression)\n", b.slot, done-chose)
	}
}

// hostTime returns the host stamp of the first console line after host
// time after that contains substr, or -1.
func hostTime(log string, after float64, substr string) float64 {
	for _, l := range strings.Split(log, "\n") {
		var h float64
		if _, err := fmt.Sscanf(l, "%g", &h); err != nil || h <= after {
			continue
		}
		if strings.Contains(l, substr) {
			return h
		}
	}
	return -1
}
