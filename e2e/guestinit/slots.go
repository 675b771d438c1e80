package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/autopatcher/autopatcher/slots"
	"golang.org/x/sys/unix"
)

const slotsConfig = "/etc/autopatcher/slots.yaml"

func openBootloader() (slots.Bootloader, error) {
	cfg, err := slots.LoadConfig(slotsConfig)
	if err != nil {
		return nil, err
	}
	return slots.Open(cfg)
}

func stateLine(st slots.BootState) string {
	return fmt.Sprintf("primary=%s pending=%s trial=%s tries=%v bad=%v", st.Primary, st.Pending, st.Trial, st.Tries, st.Bad)
}

// showBootloader opens the slots package's backend and prints its view of
// the boot.
func showBootloader() (slots.Bootloader, error) {
	bl, err := openBootloader()
	if err != nil {
		return nil, err
	}
	st, err := bl.State()
	if err != nil {
		return nil, err
	}
	logf("slots state %s", stateLine(st))
	return bl, nil
}

// commitTryOther commits the booted slot and sets a one-shot try of the
// other; it returns the other slot and the backend's state afterwards.
func commitTryOther(bl slots.Bootloader, slot string) (string, slots.BootState, error) {
	other, err := otherSlot(slot)
	if err != nil {
		return "", slots.BootState{}, err
	}
	if err := bl.Commit(slot); err != nil {
		return "", slots.BootState{}, err
	}
	if err := bl.Try(other); err != nil {
		return "", slots.BootState{}, err
	}
	st, err := bl.State()
	return other, st, err
}

// slotsCommitTry is commitTry through the slots package's U-Boot backend:
// the code autopatchd uses, on the files U-Boot reads.
func slotsCommitTry(slot string) error {
	bl, err := showBootloader()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	mark := filepath.Join(stateDir, "slots-committed-"+slot)
	if _, err := os.Stat(mark); err == nil {
		logf("back on committed slot %s", slot)
		halt(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	other, st, err := commitTryOther(bl, slot)
	if err != nil {
		return err
	}
	if err := slots.ReplaceFile(mark, []byte(time.Now().String()), 0o644, nil); err != nil {
		return err
	}
	logf("committed %s, trying %s once: slots state %s", slot, other, stateLine(st))
	halt(unix.LINUX_REBOOT_CMD_RESTART)
	return nil
}

// slotsNoCommit reports the backend's view of a trial boot and reboots
// without committing.
func slotsNoCommit(slot string) error {
	if _, err := showBootloader(); err != nil {
		return err
	}
	logf("not committing slot %s; rebooting", slot)
	halt(unix.LINUX_REBOOT_CMD_RESTART)
	return nil
}

// slotsCommitHold commits the booted slot, tries the other once, then
// idles without syncing or rebooting: the host cuts the power.
func slotsCommitHold(slot string) error {
	bl, err := openBootloader()
	if err != nil {
		return err
	}
	other, st, err := commitTryOther(bl, slot)
	if err != nil {
		return err
	}
	logf("committed %s, trying %s once: slots state %s; holding", slot, other, stateLine(st))
	select {}
}
