package device

import (
	"errors"
	"fmt"
	"strings"
)

// ErrCapsUnsupported means this build or OS cannot drop capabilities for
// every thread of the process (a build with cgo, or not Linux).
var ErrCapsUnsupported = errors.New("device: dropping capabilities is not supported here")

// DefaultCapabilities are the Linux capabilities the daemon keeps: writing
// raw block devices and bootloader environments (dac_override, sys_rawio,
// sys_admin for block ioctls and mounts), unpacking packages with their
// owners and modes (chown, fowner, fsetid, dac_read_search), running hooks
// and health checks as the configured user and stopping them (setuid,
// setgid, kill) and rebooting (sys_boot). Everything else leaves the
// bounding set, so neither the daemon nor anything it runs can regain it.
var DefaultCapabilities = []string{
	"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill",
	"setgid", "setuid", "sys_admin", "sys_boot", "sys_rawio",
}

// capNumbers are the capability numbers by name (linux/capability.h).
var capNumbers = map[string]int{
	"chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4, "kill": 5,
	"setgid": 6, "setuid": 7, "setpcap": 8, "linux_immutable": 9, "net_bind_service": 10,
	"net_broadcast": 11, "net_admin": 12, "net_raw": 13, "ipc_lock": 14, "ipc_owner": 15,
	"sys_module": 16, "sys_rawio": 17, "sys_chroot": 18, "sys_ptrace": 19, "sys_pacct": 20,
	"sys_admin": 21, "sys_boot": 22, "sys_nice": 23, "sys_resource": 24, "sys_time": 25,
	"sys_tty_config": 26, "mknod": 27, "lease": 28, "audit_write": 29, "audit_control": 30,
	"setfcap": 31, "mac_override": 32, "mac_admin": 33, "syslog": 34, "wake_alarm": 35,
	"block_suspend": 36, "audit_read": 37, "perfmon": 38, "bpf": 39, "checkpoint_restore": 40,
}

// capMask turns capability names ("sys_boot", "CAP_SYS_BOOT") into a bit mask.
func capMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		k := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(n)), "cap_")
		c, ok := capNumbers[k]
		if !ok {
			return 0, fmt.Errorf("%w: capabilities: unknown capability %q", ErrConfig, n)
		}
		m |= 1 << c
	}
	return m, nil
}

// keepsAll reports whether the list asks to keep every capability.
func keepsAll(names []string) bool {
	return len(names) == 1 && strings.EqualFold(names[0], "all")
}
