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

// slotsCommitTry is commitTry through the slots package's U-Boot backend:
// the code autopatchd uses, on the files U-Boot reads.
func slotsCommitTry(slot string) error {
	bl, err := openBootloader()
	if err != nil {
		return err
	}
	st, err := bl.State()
	if err != nil {
		return err
	}
	logf("slots state %s", stateLine(st))
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	mark := filepath.Join(stateDir, "slots-committed-"+slot)
	if _, err := os.Stat(mark); err == nil {
		logf("back on committed slot %s", slot)
		halt(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	other := map[string]string{"A": "B", "B": "A"}[slot]
	if err := bl.Commit(slot); err != nil {
		return err
	}
	if err := bl.Try(other); err != nil {
		return err
	}
	if err := writeFileSync(mark, []byte(time.Now().String())); err != nil {
		return err
	}
	if st, err = bl.State(); err != nil {
		return err
	}
	logf("committed %s, trying %s once: slots state %s", slot, other, stateLine(st))
	halt(unix.LINUX_REBOOT_CMD_RESTART)
	return nil
}

// slotsNoCommit reports the backend's view of a trial boot and reboots
// without committing.
func slotsNoCommit(slot string) error {
	bl, err := openBootloader()
	if err != nil {
		return err
	}
	st, err := bl.State()
	if err != nil {
		return err
	}
	logf("slots state %s", stateLine(st))
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
	other := map[string]string{"A": "B", "B": "A"}[slot]
	if err := bl.Commit(slot); err != nil {
		return err
	}
	if err := bl.Try(other); err != nil {
		return err
	}
	st, err := bl.State()
	if err != nil {
		return err
	}
	logf("committed %s, trying %s once: slots state %s; holding", slot, other, stateLine(st))
	select {}
}
