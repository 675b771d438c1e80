package device

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysFunc makes one system call; DropPrivileges uses
// syscall.AllThreadsSyscall so every thread of the process changes.
type sysFunc func(trap, a1, a2, a3 uintptr) (uintptr, uintptr, syscall.Errno)

// DropPrivileges sets PR_SET_NO_NEW_PRIVS (no exec can gain privileges, so
// a setuid binary run by a hook stays unprivileged) and limits the process
// to the capabilities named in keep: every other one leaves the bounding
// set, the permitted and effective sets, and the ambient and inheritable
// sets are cleared. keep = ["all"] changes nothing. It applies to every
// thread, which Go supports only in builds without cgo (the daemon's static
// build); elsewhere it returns ErrCapsUnsupported and changes nothing.
func DropPrivileges(keep []string) error {
	if keepsAll(keep) {
		return nil
	}
	mask, err := capMask(keep)
	if err != nil {
		return err
	}
	// A harmless all-threads call first: it fails at once where the
	// runtime cannot run them (cgo), before anything changed.
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_GET_NO_NEW_PRIVS, 0, 0); e == syscall.ENOTSUP {
		return ErrCapsUnsupported
	}
	return dropCaps(mask, lastCap(), syscall.AllThreadsSyscall)
}

// lastCap is the highest capability the kernel knows.
func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 && n < 64 {
			return n
		}
	}
	return 40
}

func dropCaps(mask uint64, last int, sys sysFunc) error {
	if _, _, e := sys(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		return fmt.Errorf("drop privileges: no_new_privs: %w", e)
	}
	if _, _, e := sys(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); e != 0 && e != syscall.EINVAL {
		return fmt.Errorf("drop privileges: clear ambient capabilities: %w", e)
	}
	// The bounding set first: dropping from it needs CAP_SETPCAP, which
	// itself goes with the capset below.
	for c := 0; c <= last; c++ {
		if mask&(1<<c) != 0 {
			continue
		}
		if _, _, e := sys(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
			if e == syscall.EINVAL {
				break // beyond what this kernel knows
			}
			return fmt.Errorf("drop privileges: bounding set, capability %d: %w", c, e)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("drop privileges: capget: %w", err)
	}
	lo, hi := uint32(mask), uint32(mask>>32)
	for i, m := range []uint32{lo, hi} {
		data[i].Permitted &= m
		data[i].Effective &= m
		data[i].Inheritable = 0
	}
	if _, _, e := sys(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("drop privileges: capset: %w", e)
	}
	return nil
}
