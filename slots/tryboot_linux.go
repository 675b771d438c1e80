package slots

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RebootTryboot syncs the filesystems and restarts the machine with the
// argument "0 tryboot" (reboot(2), LINUX_REBOOT_CMD_RESTART2): the Raspberry
// Pi firmware driver passes it on, and the next boot alone uses autoboot.txt's
// [tryboot] section. It only returns on error. Use it when no init system
// reads the reboot-param file that Try writes.
func RebootTryboot() error {
	unix.Sync()
	arg, err := unix.BytePtrFromString(TrybootRebootArg)
	if err != nil {
		return fmt.Errorf("reboot with tryboot: %w", err)
	}
	_, _, errno := unix.Syscall6(unix.SYS_REBOOT,
		unix.LINUX_REBOOT_MAGIC1, unix.LINUX_REBOOT_MAGIC2,
		unix.LINUX_REBOOT_CMD_RESTART2, uintptr(unsafe.Pointer(arg)), 0, 0)
	return fmt.Errorf("reboot with tryboot: %w", errno)
}
