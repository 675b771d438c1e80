//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBootScriptAB proves boot.scr's A/B logic with guestinit alone: slot A
// boots, commits itself and asks for one try of B; B boots and does not
// commit; the next boot is A again because B's single try is used up.
func TestBootScriptAB(t *testing.T) {
	r := getRig(t)
	img := r.abDisk(t, "ab", guest{Role: "commit-try", Version: "a1"}, guest{Role: "nocommit", Version: "b1"})
	logPath := filepath.Join(r.work, "bootscript.log")
	r.keepLog(t, logPath)
	v, err := r.boot(img, logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer v.kill()
	start := time.Now()
	werr := v.wait(90 * time.Second)
	el := time.Since(start)
	log := v.text()
	report(t, werr == nil, "guest powered off by itself after %.1fs (%v)", el.Seconds(), werr)

	got := strings.Join(boots(log), " ")
	report(t, got == "A/a1 B/b1 A/a1", "Linux booted A, then B once, then A again: got %q", got)
	gotU := strings.Join(ubootChoices(log), " ")
	report(t, gotU == "A(2,3) B(3,0) A(2,0)", "U-Boot choices (slot(A_LEFT,B_LEFT) after decrement): got %q, want %q", gotU, "A(2,3) B(3,0) A(2,0)")
	report(t, strings.Contains(log, "back on committed slot A"), "slot A saw the failed trial of B")

	r.checkEnvFiles(t, img)
	if ts := stampOf(log, "init started"); ts >= 0 {
		fmt.Printf("TIME  kernel start -> /init first line: %.2fs (guest clock); whole run %.1fs wall\n", ts, el.Seconds())
	}
}

// TestSlotsBackendAB runs the same A/B sequence with the slots package's
// U-Boot backend (the code autopatchd uses) writing the env files in the
// guest: U-Boot must read what it wrote, and it must read what U-Boot wrote
// (the trial of B shows up in its state).
func TestSlotsBackendAB(t *testing.T) {
	r := getRig(t)
	fwEnv, slotsYAML := r.boardFiles(t)
	files := map[string][]byte{"etc/fw_env.config": fwEnv, "etc/autopatcher/slots.yaml": slotsYAML}
	img := r.abDisk(t, "sl", guest{Role: "slots-commit-try", Version: "a1", Files: files},
		guest{Role: "slots-nocommit", Version: "b1", Files: files})
	logPath := filepath.Join(r.work, "slots-backend.log")
	r.keepLog(t, logPath)
	v, err := r.boot(img, logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer v.kill()
	werr := v.wait(90 * time.Second)
	log := v.text()
	report(t, werr == nil, "guest powered off by itself (%v)", werr)
	got := strings.Join(boots(log), " ")
	report(t, got == "A/a1 B/b1 A/a1", "Linux booted A, then B once, then A again: got %q", got)
	gotU := strings.Join(ubootChoices(log), " ")
	report(t, gotU == "A(2,3) B(3,0) A(2,0)", "U-Boot choices: got %q, want %q", gotU, "A(2,3) B(3,0) A(2,0)")
	report(t, strings.Contains(log, "committed A, trying B once: slots state primary=A pending=B"),
		"slots backend on A: committed A and set a one-shot try of B")
	bs := splitBoots(log)
	report(t, len(bs) == 3 && strings.Contains(bs[1].text, "trial=B"), "slots backend on B sees the trial U-Boot started (trial=B)")
	r.checkEnvFiles(t, img)
}

// TestEnvSurvivesPowerCut cuts the power two seconds after the slots
// backend committed A and set a one-shot try of B, then lets U-Boot read
// the env files: it must boot B. The image mounts /boot with sync/dirsync;
// the same cut on a default (async) vfat mount is run too and reported,
// because there Linux's fsync of the env files does not write the FAT and
// U-Boot then finds neither file (it falls back to defaults and boots A).
func TestEnvSurvivesPowerCut(t *testing.T) {
	r := getRig(t)
	fwEnv, slotsYAML := r.boardFiles(t)
	for _, async := range []bool{false, true} {
		name := map[bool]string{false: "sync", true: "async"}[async]
		files := map[string][]byte{"etc/fw_env.config": fwEnv, "etc/autopatcher/slots.yaml": slotsYAML}
		if async {
			files["etc/guestinit/boot-async"] = []byte("1\n")
		}
		img := r.abDisk(t, "pc-"+name, guest{Role: "slots-commit-hold", Version: "a1", Files: files},
			guest{Role: "slots-nocommit", Version: "b1", Files: files})
		log := r.run(t, img, "envcut-"+name, 2*time.Minute, 2*time.Second, func(log string) bool { return strings.Contains(log, "holding") })
		if !strings.Contains(log, "holding") {
			report(t, false, "%s: slots backend committed A and tried B", name)
			continue
		}
		logPath2 := filepath.Join(r.work, "envcut-"+name+"-next.log")
		r.keepLog(t, logPath2)
		v, err := r.boot(img, logPath2)
		if err != nil {
			t.Fatal(err)
		}
		_, werr := v.waitFor(time.Minute, func(l string) bool { return strings.Contains(l, "autopatcher: booting slot") })
		v.kill()
		_ = v.wait(10 * time.Second)
		u := ubootChoices(v.text())
		ok := werr == nil && len(u) == 1 && strings.HasPrefix(u[0], "B(3,0)")
		if !async {
			report(t, ok, "boot partition mounted sync,dirsync: after a power cut 2s after the env update U-Boot boots the tried slot B: %v", u)
			continue
		}
		fmt.Printf("INFO  %s: boot partition mounted without sync,dirsync: after the same cut U-Boot chose %v (B(3,0) = env survived); %s\n",
			t.Name(), u, map[bool]string{true: "the env writer is durable on its own", false: "the env update was lost: mount /boot sync,dirsync or syncfs after writing"}[ok])
	}
}

// abDisk builds a disk whose slot A runs guest a and slot B guest b, with a
// small data partition.
func (r *rig) abDisk(t *testing.T, name string, a, b guest) string {
	t.Helper()
	var slotImg [2]string
	for i, g := range []guest{a, b} {
		ird, err := r.initramfs(g)
		if err != nil {
			t.Fatal(err)
		}
		if slotImg[i], err = r.slotImage(name+[]string{"A", "B"}[i], ird); err != nil {
			t.Fatal(err)
		}
	}
	img, err := r.diskImage(name, slotImg[0], slotImg[1], map[string][]byte{"README": []byte("data partition\n")})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// checkEnvFiles reports whether both env files on img, read by the slots
// package and by fw_printenv, hold the state after A committed itself and
// B's single try was used up.
func (r *rig) checkEnvFiles(t *testing.T, img string) {
	t.Helper()
	p, rd := r.readEnvFiles(t, img)
	want := map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}
	for _, f := range []struct {
		name string
		vars map[string]string
	}{{"uboot.env", p}, {"uboot-redund.env", rd}} {
		ok := len(f.vars) > 0
		for k, w := range want {
			if f.vars[k] != w {
				ok = false
			}
		}
		report(t, ok, "%s on disk (slots + fw_printenv): %v, want %v", f.name, f.vars, want)
	}
}
