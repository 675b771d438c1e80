package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/autopatcher/autopatcher/slots"
	"golang.org/x/sys/unix"
)

const (
	dataDir    = "/data/autopatcher" // autopatchd's data_dir
	envPrimary = "/boot/uboot.env"
	envRedund  = "/boot/uboot-redund.env"
	envSize    = 0x4000 // what boot.cmd imports and exports
	stateDir   = "/data/e2e"
)

func readEnv() (map[string]string, error) {
	var errs []error
	for _, p := range []string{envPrimary, envRedund} {
		b, err := os.ReadFile(p)
		if err == nil {
			var vars slots.Env
			if vars, _, err = slots.DecodeEnv(b, false); err == nil {
				return vars, nil
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", p, err))
	}
	return nil, errors.Join(errs...)
}

// writeEnv writes the second copy first, then the primary, as the boot
// script does.
func writeEnv(vars map[string]string) error {
	b, err := slots.EncodeEnv(vars, envSize, false, 0)
	if err != nil {
		return err
	}
	for _, p := range []string{envRedund, envPrimary} {
		if err := slots.ReplaceFile(p, b, 0o644, nil); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// otherSlot is the A/B partner of the booted slot.
func otherSlot(slot string) (string, error) {
	switch slot {
	case "A":
		return "B", nil
	case "B":
		return "A", nil
	}
	return "", fmt.Errorf("booted slot %q unknown", slot)
}

func envLine(vars map[string]string) string {
	return fmt.Sprintf("BOOT_ORDER=%q BOOT_A_LEFT=%s BOOT_B_LEFT=%s", vars["BOOT_ORDER"], vars["BOOT_A_LEFT"], vars["BOOT_B_LEFT"])
}

// commitTry: first boot on a slot commits it and tries the other slot once;
// a later boot on the same slot (after the other one failed) powers off.
func commitTry(slot string) error {
	vars, err := readEnv()
	if err != nil {
		return err
	}
	logf("env %s", envLine(vars))
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	mark := filepath.Join(stateDir, "committed-"+slot)
	if _, err := os.Stat(mark); err == nil {
		logf("back on committed slot %s", slot)
		halt(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	other, err := otherSlot(slot)
	if err != nil {
		return err
	}
	// Commit the booted slot (full tries), then put the other slot first
	// with one try: the next boot is a trial of it.
	vars["BOOT_"+slot+"_LEFT"] = "3"
	vars["BOOT_ORDER"] = other + " " + slot
	vars["BOOT_"+other+"_LEFT"] = "1"
	if err := writeEnv(vars); err != nil {
		return err
	}
	if err := slots.ReplaceFile(mark, []byte(time.Now().String()), 0o644, nil); err != nil {
		return err
	}
	logf("committed %s, trying %s once: %s", slot, other, envLine(vars))
	halt(unix.LINUX_REBOOT_CMD_RESTART)
	return nil
}

// runAutopatchd runs "autopatchd run" and the host's one-shot command
// queue (/data/e2e-queue: lines "install FILE", "status", "sleep 2s",
// "reboot", "poweroff"; other words are autopatchd subcommands); with hang, it freezes the daemon once it holds the watchdog.
func runAutopatchd(hang bool) error {
	const bin = "/bin/autopatchd"
	daemon := command("autopatchd", bin, "run")
	if err := daemon.Start(); err != nil {
		return fmt.Errorf("start autopatchd: %w", err)
	}
	logf("autopatchd run started pid=%d", daemon.Process.Pid)
	go watchState(dataDir)
	if hang {
		pid := daemon.Process.Pid
		for !holdsWatchdog(pid) {
			time.Sleep(50 * time.Millisecond)
		}
		if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
			return fmt.Errorf("freeze autopatchd: %w", err)
		}
		logf("system hung: autopatchd frozen while holding /dev/watchdog")
		select {}
	}
	queue := "/data/e2e-queue"
	if b, err := os.ReadFile(queue); err == nil {
		// One shot: consume the queue before acting on it, so a reset in the
		// middle never replays it.
		if err := os.Rename(queue, queue+".done"); err != nil {
			return fmt.Errorf("consume queue: %w", err)
		}
		unix.Sync()
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || strings.HasPrefix(f[0], "#") {
				continue
			}
			logf("queue: %s", line)
			switch f[0] {
			case "reboot":
				halt(unix.LINUX_REBOOT_CMD_RESTART)
			case "poweroff":
				halt(unix.LINUX_REBOOT_CMD_POWER_OFF)
			case "sleep":
				d, _ := time.ParseDuration(f[1])
				time.Sleep(d)
			default:
				cmd := command(f[0], bin, f...)
				err := cmd.Run()
				logf("queue: %s exited: %v", line, err)
			}
		}
	}
	err := daemon.Wait()
	logf("autopatchd run exited: %v", err)
	return err
}

// holdsWatchdog reports whether pid has a watchdog device open.
func holdsWatchdog(pid int) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(t, "/dev/watchdog") {
			return true
		}
	}
	return false
}
