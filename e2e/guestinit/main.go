// Command guestinit is the /init of the armv7 QEMU target's initramfs.
//
// It mounts /proc, /sys, /dev, the boot partition (/dev/vda1, FAT, on /boot)
// and the data partition (/dev/vda4, ext4, on /data), loads the kernel modules listed
// in /lib/modules/order (with optional parameters from
// /lib/modules/params, "module param=value ..." lines), then runs the role
// named in /etc/guestinit/role:
//
//	autopatchd  start "autopatchd run", run the one-shot command queue the
//	            host left in /data/e2e/queue, keep the console fed
//	commit-try  test role: commit the booted slot, try the other once, reboot
//	            (the second time it finds itself booted, power off)
//	nocommit    test role: boot, report, reboot without committing
//	slots-commit-try, slots-nocommit  the same through the slots package's
//	            U-Boot backend (/etc/autopatcher/slots.yaml)
//	slots-commit-hold  commit, try the other slot once, then idle until the
//	            host cuts the power
//
// With /etc/guestinit/boot-async in the image the boot partition is mounted
// without sync/dirsync (see setup).
//
//	autopatchd-hang  like autopatchd, then freeze autopatchd (SIGSTOP) once
//	            it holds /dev/watchdog: a hung system the watchdog must reset
//
// Started under another name it is a helper of the image:
//
//	reboot                sync and restart the machine (autopatchd's reboot command)
//	.../hooks/DIR/NAME    a hook; prints its AP_* environment on the console
//	.../health.d/NAME     a health check; exits 0 if /etc/guestinit/health
//	                      says "ok", 1 otherwise
//
// Every console line it prints starts with "AP-E2E [  seconds]", the time
// since the kernel started (CLOCK_BOOTTIME, the clock of the kernel's own
// printk stamps), so the host can measure boot phases from the serial log.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/autopatcher/autopatcher/slots"
	"golang.org/x/sys/unix"
)

var console io.Writer = os.Stdout

var logMu sync.Mutex

func stamp() string {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return fmt.Sprintf("[%5d.%06d]", ts.Sec, ts.Nsec/1000)
}

func logf(format string, args ...any) {
	logMu.Lock()
	defer logMu.Unlock()
	fmt.Fprintf(console, "AP-E2E %s %s\n", stamp(), fmt.Sprintf(format, args...))
}

func main() {
	if os.Getpid() != 1 {
		os.Exit(helper(os.Args[0]))
	}
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		console = c
	}
	logf("init started")
	if err := setup(); err != nil {
		logf("FATAL setup: %v", err)
		halt(unix.LINUX_REBOOT_CMD_RESTART)
	}
	slot := bootedSlot()
	role := strings.TrimSpace(readFile("/etc/guestinit/role"))
	version := strings.TrimSpace(readFile("/etc/guestinit/version"))
	logf("booted slot=%s version=%s role=%s", slot, version, role)
	var err error
	switch role {
	case "autopatchd":
		err = runAutopatchd(false)
	case "autopatchd-hang":
		err = runAutopatchd(true)
	case "commit-try":
		err = commitTry(slot)
	case "slots-commit-try":
		err = slotsCommitTry(slot)
	case "slots-nocommit":
		err = slotsNoCommit(slot)
	case "slots-commit-hold":
		err = slotsCommitHold(slot)
	case "nocommit":
		logf("not committing slot %s; rebooting", slot)
		halt(unix.LINUX_REBOOT_CMD_RESTART)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		logf("FATAL %s: %v", role, err)
	}
	halt(unix.LINUX_REBOOT_CMD_RESTART)
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// bootedSlot is the slot the boot script named on the kernel command line,
// or "" when it named none.
func bootedSlot() string {
	slot, _ := slots.Booted(readFile("/proc/cmdline"))
	return slot
}

func setup() error {
	mounts := []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/var/lock", "tmpfs"},
	}
	for _, m := range mounts {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	if err := loadModules(); err != nil {
		return err
	}
	logf("modules loaded")
	// The boot partition is mounted synchronous: Linux's vfat fsync of a
	// file and its directory does not reliably write the FAT itself, and a
	// power cut after an env update then leaves uboot.env and
	// uboot-redund.env pointing at clusters the FAT calls free, which
	// U-Boot cannot load. With MS_SYNCHRONOUS|MS_DIRSYNC every FAT, directory
	// and data write reaches the disk before the call returns.
	for _, m := range []struct {
		dev, dst, fs string
		flags        uintptr
		opts         string
	}{
		{"/dev/vda1", "/boot", "vfat", bootFlags(), "shortname=mixed"},
		{"/dev/vda4", "/data", "ext4", 0, ""},
	} {
		if err := waitFor(m.dev, 10*time.Second); err != nil {
			return err
		}
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.dev, m.dst, m.fs, m.flags, m.opts); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.dev, m.dst, err)
		}
	}
	logf("partitions mounted")
	return nil
}

func loadModules() error {
	params := map[string]string{}
	for _, l := range strings.Split(readFile("/lib/modules/params"), "\n") {
		if name, p, ok := strings.Cut(strings.TrimSpace(l), " "); ok {
			params[name] = p
		}
	}
	for _, m := range strings.Fields(readFile("/lib/modules/order")) {
		f, err := os.Open(filepath.Join("/lib/modules", m+".ko"))
		if err != nil {
			return fmt.Errorf("open module %s: %w", m, err)
		}
		err = unix.FinitModule(int(f.Fd()), params[m], 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("load module %s: %w", m, err)
		}
	}
	return nil
}

func waitFor(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not there after %v", path, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func halt(cmd int) {
	unix.Sync()
	for _, m := range []string{"/data", "/boot"} {
		_ = unix.Unmount(m, 0)
	}
	unix.Sync()
	if cmd == unix.LINUX_REBOOT_CMD_POWER_OFF {
		logf("powering off")
	} else {
		logf("rebooting")
	}
	_ = unix.Reboot(cmd)
	select {}
}

// prefixLines copies r to the console line by line with the init's stamp.
func prefixLines(r io.Reader, tag string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		logf("%s: %s", tag, bytes.TrimRight(sc.Bytes(), "\r"))
	}
}

func command(tag string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go prefixLines(pr, tag)
	return cmd
}

// helper runs the image's helper commands (see the package doc).
func helper(argv0 string) int {
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		console = c
	}
	switch {
	case strings.Contains(argv0, "/hooks/"):
		var ap []string
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "AP_") && !strings.HasPrefix(kv, "AP_DIGEST=") {
				ap = append(ap, kv)
			}
		}
		logf("hook %s: %s", filepath.Base(filepath.Dir(argv0)), strings.Join(ap, " "))
		return 0
	case filepath.Base(argv0) == "reboot":
		logf("reboot requested")
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		return 1
	case strings.Contains(argv0, "/health.d/"):
		h := strings.TrimSpace(readFile("/etc/guestinit/health"))
		if h == "ok" {
			logf("health check %s: ok", filepath.Base(argv0))
			return 0
		}
		logf("health check %s: failing (health=%q)", filepath.Base(argv0), h)
		return 1
	}
	fmt.Fprintf(os.Stderr, "guestinit: unknown helper %q\n", argv0)
	return 2
}

// bootFlags are the boot partition's mount flags; an image carrying
// /etc/guestinit/boot-async mounts it without them (to show why they matter).
func bootFlags() uintptr {
	if _, err := os.Stat("/etc/guestinit/boot-async"); err == nil {
		logf("boot partition mounted without sync/dirsync")
		return 0
	}
	return unix.MS_SYNCHRONOUS | unix.MS_DIRSYNC
}
