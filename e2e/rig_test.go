//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/e2e/disk"
	"github.com/autopatcher/autopatcher/internal/gcflags"
	"github.com/autopatcher/autopatcher/slots"
)

// rig holds the shared inputs of every scenario: kernel, modules, boot
// script, U-Boot flash, guest binaries.
type rig struct {
	root    string // repository root
	cache   string // .cache/e2e
	work    string // per-run build folder
	kernel  []byte
	modules map[string][]byte
	order   string
	init    []byte // guestinit for linux/arm GOARM=7
	bootScr []byte
	flash   string // 64 MiB pflash bank 1 with the pre-seeded U-Boot env
}

// ubootBin is Debian's U-Boot for qemu-system-arm -M virt (u-boot-qemu).
const ubootBin = "/usr/lib/u-boot/qemu_arm/u-boot.bin"

// envSize is the size of uboot.env and uboot-redund.env, what boot.cmd
// imports and exports.
const envSize = 0x4000

// errNoTool means a Debian tool the tests run is not installed.
var errNoTool = errors.New("tool not installed")

var (
	rigOnce sync.Once
	theRig  *rig
	rigErr  error
)

func getRig(t *testing.T) *rig {
	t.Helper()
	rigOnce.Do(func() { theRig, rigErr = newRig() })
	if errors.Is(rigErr, errNoTool) && os.Getenv("CI") != "true" {
		t.Skipf("set up: %v", rigErr)
	}
	if rigErr != nil {
		t.Fatalf("set up: %v", rigErr)
	}
	return theRig
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func newRig() (*rig, error) {
	for _, tool := range []string{"qemu-system-arm", "mkimage", "mkenvimage", "mkfs.vfat", "mcopy", "mkfs.ext4", "debugfs", "e2fsck", "fw_printenv"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%w: %s (scripts/install-deps): %v", errNoTool, tool, err)
		}
	}
	if _, err := os.Stat(ubootBin); err != nil {
		return nil, fmt.Errorf("%w: %s (u-boot-qemu): %v", errNoTool, ubootBin, err)
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	r := &rig{root: root, cache: filepath.Join(root, ".cache", "e2e")}
	if c := os.Getenv("E2E_CACHE"); c != "" {
		r.cache = c
	}
	kdir := filepath.Join(r.cache, "kernel")
	if _, err := os.Stat(filepath.Join(kdir, "vmlinuz")); err != nil {
		cmd := exec.Command(filepath.Join(root, "e2e", "fetch.sh"))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("fetch kernel: %w", err)
		}
	}
	if r.kernel, err = os.ReadFile(filepath.Join(kdir, "vmlinuz")); err != nil {
		return nil, err
	}
	ob, err := os.ReadFile(filepath.Join(kdir, "modules", "order"))
	if err != nil {
		return nil, err
	}
	r.order = string(ob)
	r.modules = map[string][]byte{}
	for _, m := range strings.Fields(r.order) {
		if r.modules[m], err = os.ReadFile(filepath.Join(kdir, "modules", m+".ko")); err != nil {
			return nil, err
		}
	}
	r.work = filepath.Join(r.cache, "work")
	if err := os.RemoveAll(r.work); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.work, 0o755); err != nil {
		return nil, err
	}
	if r.init, err = r.goBuild("./e2e/guestinit", "guestinit"); err != nil {
		return nil, err
	}
	scr := filepath.Join(r.work, "boot.scr")
	if out, err := exec.Command("mkimage", "-A", "arm", "-O", "linux", "-T", "script", "-C", "none",
		"-n", "autopatcher A/B", "-d", filepath.Join(root, "targets", "armv7", "boot.cmd"), scr).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkimage boot.scr: %w: %s", err, out)
	}
	if r.bootScr, err = os.ReadFile(scr); err != nil {
		return nil, err
	}
	r.flash = filepath.Join(r.work, "flash1.img")
	if err := ubootFlash(r.flash, filepath.Join(root, "targets", "armv7", "u-boot-env.txt")); err != nil {
		return nil, err
	}
	return r, nil
}

// goBuild cross-compiles a package for the guest (linux/arm GOARM=7,
// static); autopatchd gets the compiler flags it ships with, from
// scripts/autopatchd.gcflags.
func (r *rig) goBuild(pkg, name string) ([]byte, error) {
	out := filepath.Join(r.work, name)
	args := []string{"build", "-trimpath", "-ldflags=-s -w"}
	if pkg == "./cmd/autopatchd" {
		flags, err := gcflags.Read(filepath.Join(r.root, "scripts", "autopatchd.gcflags"))
		if err != nil {
			return nil, err
		}
		args = append(args, flags...)
	}
	cmd := exec.Command("go", append(args, "-o", out, pkg)...)
	cmd.Dir = r.root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=7", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s for linux/arm: %w: %s", pkg, err, b)
	}
	return os.ReadFile(out)
}

// ubootFlash writes the 64 MiB second pflash bank holding U-Boot's
// environment (one 256 KiB copy at offset 0, made by mkenvimage).
func ubootFlash(out, envText string) error {
	env := out + ".env"
	if b, err := exec.Command("mkenvimage", "-s", "0x40000", "-o", env, envText).CombinedOutput(); err != nil {
		return fmt.Errorf("mkenvimage: %w: %s", err, b)
	}
	b, err := os.ReadFile(env)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Close()
}

// guest describes one initramfs.
type guest struct {
	Role    string            // guestinit role
	Version string            // shown on the console as version=
	Health  string            // "ok" or "fail": what the health.d checks answer
	Params  string            // /lib/modules/params
	Files   map[string][]byte // extra files; paths under bin/ are executable
	Links   map[string]string // symlinks path -> target
}

// initramfs builds a gzip'd newc initramfs: guestinit as /init, the
// modules, the role, version and health files, and the extra files.
func (r *rig) initramfs(g guest) ([]byte, error) {
	role, version, params, extra := g.Role, g.Version, g.Params, g.Files
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	c := disk.NewCpio(zw)
	dirs := map[string]bool{}
	mkdir := func(p string) error {
		var err error
		parts := strings.Split(strings.Trim(p, "/"), "/")
		for i := range parts {
			d := strings.Join(parts[:i+1], "/")
			if !dirs[d] {
				dirs[d] = true
				if e := c.Dir(d, 0o755); e != nil && err == nil {
					err = e
				}
			}
		}
		return err
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "boot", "data", "bin", "etc/guestinit", "lib/modules", "var/lock", "var/lib"} {
		if err := mkdir(d); err != nil {
			return nil, err
		}
	}
	if err := c.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if err := c.File("init", 0o755, r.init); err != nil {
		return nil, err
	}
	for _, m := range strings.Fields(r.order) {
		if err := c.File("lib/modules/"+m+".ko", 0o644, r.modules[m]); err != nil {
			return nil, err
		}
	}
	files := map[string][]byte{
		"lib/modules/order":     []byte(r.order),
		"lib/modules/params":    []byte(params),
		"etc/guestinit/role":    []byte(role + "\n"),
		"etc/guestinit/version": []byte(version + "\n"),
		"etc/guestinit/health":  []byte(g.Health + "\n"),
	}
	for p, b := range extra {
		files[strings.TrimPrefix(p, "/")] = b
	}
	for p, b := range files {
		if err := mkdir(filepath.Dir(p)); err != nil {
			return nil, err
		}
		perm := uint32(0o644)
		if strings.HasPrefix(p, "bin/") {
			perm = 0o755
		}
		if err := c.File(p, perm, b); err != nil {
			return nil, err
		}
	}
	for p, target := range g.Links {
		p = strings.TrimPrefix(p, "/")
		if err := mkdir(filepath.Dir(p)); err != nil {
			return nil, err
		}
		if err := c.Symlink(p, target); err != nil {
			return nil, err
		}
	}
	if err := c.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// slotImage builds the ext4 image of one slot (kernel + initramfs) and
// returns its path.
func (r *rig) slotImage(name string, initrd []byte) (string, error) {
	dir := filepath.Join(r.work, name+".d")
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), r.kernel, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "initrd.img"), initrd, 0o644); err != nil {
		return "", err
	}
	size := int64(len(r.kernel)+len(initrd))*11/10 + 2*disk.MiB
	size = (size + disk.MiB - 1) / disk.MiB * disk.MiB
	if slot, _ := disk.Find(disk.Layout(), disk.PartSlotA); size > slot.Size {
		return "", fmt.Errorf("slot image %s needs %d MiB, the slot partitions hold %d MiB", name, size>>20, slot.Size>>20)
	}
	out := filepath.Join(r.work, name+".ext4")
	if err := disk.Ext4(context.Background(), out, size, name, dir, false); err != nil {
		return "", err
	}
	return out, nil
}

// diskImage assembles a disk with the given slot images and data files and
// the factory env (A first, full tries) on the boot partition.
func (r *rig) diskImage(name, slotA, slotB string, data map[string][]byte) (string, error) {
	ctx := context.Background()
	env, err := slots.EncodeEnv(slots.Env{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}, envSize, false, 0)
	if err != nil {
		return "", err
	}
	parts := disk.Layout()
	boot := filepath.Join(r.work, name+".boot.fat")
	if err := disk.FAT(ctx, boot, 16*disk.MiB, false, "BOOT", map[string][]byte{
		"boot.scr": r.bootScr, "uboot.env": env, "uboot-redund.env": env,
	}); err != nil {
		return "", err
	}
	dataDir := filepath.Join(r.work, name+".data.d")
	if err := os.RemoveAll(dataDir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", err
	}
	for n, b := range data {
		if err := os.WriteFile(filepath.Join(dataDir, n), b, 0o644); err != nil {
			return "", err
		}
	}
	dataPart, _ := disk.Find(parts, disk.PartData)
	dataImg := filepath.Join(r.work, name+".data.ext4")
	if err := disk.Ext4(ctx, dataImg, dataPart.Size, "data", dataDir, true); err != nil {
		return "", err
	}
	os.RemoveAll(dataDir)
	out := filepath.Join(r.work, name+".img")
	images := map[string]string{disk.PartBoot: boot, disk.PartData: dataImg}
	if slotA != "" {
		images[disk.PartSlotA] = slotA
	}
	if slotB != "" {
		images[disk.PartSlotB] = slotB
	}
	if err := disk.Assemble(out, parts, images); err != nil {
		return "", err
	}
	os.Remove(boot)
	os.Remove(dataImg)
	return out, nil
}

// vm is one running QEMU.
type vm struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	log   bytes.Buffer
	lines chan string
	done  chan error
	start time.Time
}

// boot starts QEMU on img; the serial console goes to logPath and to the
// returned vm's line channel.
func (r *rig) boot(img, logPath string) (*vm, error) {
	args := []string{"-M", "virt", "-cpu", "cortex-a15", "-m", "256", "-smp", "1",
		"-nographic", "-no-user-config", "-nodefaults", "-display", "none", "-serial", "stdio",
		"-bios", ubootBin,
		"-drive", "if=pflash,unit=1,format=raw,readonly=on,file=" + r.flash,
		"-drive", "if=none,id=d0,format=raw,cache=writeback,file=" + img,
		"-device", "virtio-blk-pci,drive=d0",
	}
	cmd := exec.Command("qemu-system-arm", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	v := &vm{cmd: cmd, lines: make(chan string, 4096), done: make(chan error, 1), start: time.Now()}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			el := time.Since(v.start).Seconds()
			fmt.Fprintf(lf, "%8.3f %s\n", el, line)
			v.mu.Lock()
			fmt.Fprintf(&v.log, "%8.3f %s\n", el, line)
			v.mu.Unlock()
			select {
			case v.lines <- line:
			default:
			}
		}
		lf.Close()
		close(v.lines)
		v.done <- cmd.Wait()
	}()
	return v, nil
}

// waitFor reads console lines until match returns true (ok), QEMU exits or
// the timeout passes.
func (v *vm) waitFor(timeout time.Duration, match func(string) bool) (bool, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-v.lines:
			if !ok {
				return false, fmt.Errorf("qemu exited")
			}
			if match(l) {
				return true, nil
			}
		case <-tm.C:
			return false, fmt.Errorf("timeout after %v", timeout)
		}
	}
}

// wait waits for QEMU to exit by itself (guest power off) or kills it.
func (v *vm) wait(timeout time.Duration) error {
	for {
		select {
		case _, ok := <-v.lines:
			if !ok {
				return <-v.done
			}
		case <-time.After(timeout):
			v.kill()
			return fmt.Errorf("qemu still running after %v; killed", timeout)
		}
	}
}

// kill ends QEMU by its PID (a power cut for the guest).
func (v *vm) kill() {
	if v.cmd.Process != nil {
		_ = v.cmd.Process.Kill()
	}
}

func (v *vm) text() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.log.String()
}

// readEnvFiles extracts uboot.env and uboot-redund.env from the boot
// partition of img with mtools and decodes them with the slots package and with fw_printenv.
func (r *rig) readEnvFiles(t *testing.T, img string) (primary, redund map[string]string) {
	t.Helper()
	dir := t.TempDir()
	parts := disk.Layout()
	bootPart, _ := disk.Find(parts, disk.PartBoot)
	out := map[string]map[string]string{}
	for _, name := range []string{"uboot.env", "uboot-redund.env"} {
		dst := filepath.Join(dir, name)
		cmd := exec.Command("mcopy", "-n", "-i", fmt.Sprintf("%s@@%d", img, bootPart.Start), "::"+name, dst)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("mcopy %s: %v: %s", name, err, b)
			continue
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		vars, _, err := slots.DecodeEnv(b, false)
		if err != nil {
			t.Errorf("decode %s: %v", name, err)
			continue
		}
		// The same file through Debian's fw_printenv.
		cfg := filepath.Join(dir, name+".config")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("%s 0x0000 0x4000\n", dst)), 0o644); err != nil {
			t.Fatal(err)
		}
		fb, err := exec.Command("fw_printenv", "-c", cfg).CombinedOutput()
		if err != nil {
			t.Errorf("fw_printenv %s: %v: %s", name, err, fb)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(fb)), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok && vars[k] != v {
				t.Errorf("%s: fw_printenv says %s=%q, slots says %q", name, k, v, vars[k])
			}
		}
		out[name] = vars
	}
	return out["uboot.env"], out["uboot-redund.env"]
}

// report prints one PASS or FAIL line and records a failure.
func report(t *testing.T, ok bool, format string, args ...any) bool {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ok {
		fmt.Printf("PASS  %s: %s\n", t.Name(), msg)
	} else {
		fmt.Printf("FAIL  %s: %s\n", t.Name(), msg)
		t.Errorf("FAIL %s", msg)
	}
	return ok
}

// keepLog copies the serial log into .cache/e2e/logs when the test failed.
func (r *rig) keepLog(t *testing.T, logPath string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := filepath.Join(r.cache, "logs")
		_ = os.MkdirAll(dir, 0o755)
		dst := filepath.Join(dir, filepath.Base(logPath))
		if b, err := os.ReadFile(logPath); err == nil && os.WriteFile(dst, b, 0o644) == nil {
			fmt.Printf("      serial log kept: %s\n", dst)
		}
	})
}

var (
	reBooted = regexp.MustCompile(`AP-E2E \[\s*(\d+\.\d+)\] booted slot=(\w*) version=(\S*)`)
	reUBoot  = regexp.MustCompile(`autopatcher: booting slot (\w) \(BOOT_A_LEFT=(\d+) BOOT_B_LEFT=(\d+)\)`)
	reStamp  = regexp.MustCompile(`AP-E2E \[\s*(\d+\.\d+)\] (.*)`)
)

// boots lists the slots guestinit reported booting, in order.
func boots(log string) []string {
	var s []string
	for _, m := range reBooted.FindAllStringSubmatch(log, -1) {
		s = append(s, m[2]+"/"+m[3])
	}
	return s
}

// ubootChoices lists U-Boot's choices: "A(2,3)" = slot A, tries left after.
func ubootChoices(log string) []string {
	var s []string
	for _, m := range reUBoot.FindAllStringSubmatch(log, -1) {
		s = append(s, fmt.Sprintf("%s(%s,%s)", m[1], m[2], m[3]))
	}
	return s
}

// stampOf returns the guest time of the first AP-E2E line containing
// substr, or -1.
func stampOf(log, substr string) float64 {
	for _, m := range reStamp.FindAllStringSubmatch(log, -1) {
		if strings.Contains(m[2], substr) {
			f, _ := strconv.ParseFloat(m[1], 64)
			return f
		}
	}
	return -1
}
