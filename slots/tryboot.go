package slots

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Defaults of TrybootConfig.
const (
	DefaultAutobootPath = "/boot/bootsel/autoboot.txt"
	DefaultRebootParam  = "/run/systemd/reboot-param"
	// TrybootRebootArg is the reboot argument that sets the firmware's
	// one-shot tryboot flag; "0" means the default partition, which
	// autoboot.txt's [tryboot] section then overrides.
	TrybootRebootArg = "0 tryboot"
)

// Errors of the tryboot backend.
var (
	ErrTryPrimary = errors.New("slots: cannot try the primary slot")
	ErrNoBootable = errors.New("slots: change would leave no bootable slot")
)

// Tryboot is the Raspberry Pi firmware's own A/B: autoboot.txt on the
// first FAT partition picks the boot partition ([all]) and the partition of
// a one-shot trial ([tryboot]); `reboot "0 tryboot"` arms the trial, the
// firmware clears the flag before booting, so any failed trial (crash,
// hang, power loss) comes back to [all] by itself.
//
//   - Try(X): [tryboot] boot_partition = X's partition, then "0 tryboot" in
//     the reboot-param file (its directory is created if missing).
//     `systemctl reboot` passes it to reboot(2); without systemd, reboot
//     with RebootTryboot, or the trial never happens and the next boot is
//     a failed trial. Refused for the primary (ErrTryPrimary).
//   - Commit(X): [all] boot_partition = X, [tryboot] = the old primary (the
//     firmware documentation's swap); removes a pending tryboot request.
//     Commit also rewrites an autoboot.txt that does not parse with
//     [all] = [tryboot] = X: the running, healthy slot is the one thing
//     known to boot. A missing autoboot.txt is an error for every call (the
//     bootsel partition is probably not mounted; a file written into the
//     empty mount point would never reach the firmware).
//   - MarkBad(X): neither section names X any more ([tryboot] back to the
//     primary; if X was the primary, the [tryboot] slot becomes primary,
//     and ErrNoBootable if there is none); a pending tryboot request is
//     removed.
//   - State: Primary from [all]; Pending = the [tryboot] slot while the
//     reboot-param file asks for tryboot; Trial = the running slot when the
//     firmware reports tryboot=1 for the [tryboot] partition and it is not
//     [all] (so a commit ends the trial at once); Bad = slots that neither
//     section names. A boot with tryboot=0 is never a trial: a lost flag
//     counts as a failed trial, never as a commit. A missing device-tree
//     report is an error (ErrDeviceTree), never "no trial".
//
// Try, Commit and MarkBad refuse an autoboot.txt that does not parse (other
// than Commit's recovery) and never write anything but the canonical form.
// Nothing is written when the content would not change.
type Tryboot struct {
	autoboot    string
	dt          string
	rebootParam string
	parts       map[string]int

	// wrap, if set, wraps the writer of the temporary autoboot.txt (tests
	// cut writes short with it).
	wrap func(io.Writer) io.Writer
}

var _ Bootloader = (*Tryboot)(nil)

func init() { Register(BootTryboot, openTryboot) }

func openTryboot(c *Config) (Bootloader, error) {
	tc := TrybootConfig{}
	if c.Bootloader.Tryboot != nil {
		tc = *c.Bootloader.Tryboot
	}
	t, err := NewTryboot(tc)
	if err != nil {
		return nil, err
	}
	for _, n := range c.BootNames() {
		if _, ok := t.parts[n]; !ok {
			return nil, fieldErr("bootloader.tryboot.boot_partitions", "no partition for slot %q", n)
		}
	}
	return t, nil
}

// NewTryboot builds the tryboot backend. Defaults: AutobootPath
// /boot/bootsel/autoboot.txt, DeviceTreeDir /proc/device-tree/chosen/bootloader,
// RebootParamPath /run/systemd/reboot-param, BootPartitions A: 2, B: 3.
// Partitions must be distinct MBR primaries (1..4).
func NewTryboot(c TrybootConfig) (*Tryboot, error) {
	t := &Tryboot{
		autoboot:    c.AutobootPath,
		dt:          c.DeviceTreeDir,
		rebootParam: c.RebootParamPath,
		parts:       c.BootPartitions,
	}
	if t.autoboot == "" {
		t.autoboot = DefaultAutobootPath
	}
	if t.dt == "" {
		t.dt = DefaultTrybootDT
	}
	if t.rebootParam == "" {
		t.rebootParam = DefaultRebootParam
	}
	if len(t.parts) == 0 {
		t.parts = map[string]int{"A": 2, "B": 3}
	}
	if len(t.parts) < 2 {
		return nil, fieldErr("bootloader.tryboot.boot_partitions", "need two slots, have %d", len(t.parts))
	}
	used := map[int]string{}
	for _, n := range slices.Sorted(maps.Keys(t.parts)) {
		p := t.parts[n]
		if p < 1 || p > 4 {
			return nil, fieldErr("bootloader.tryboot.boot_partitions."+n, "partition %d is not an MBR primary 1..4", p)
		}
		if o, ok := used[p]; ok {
			return nil, fieldErr("bootloader.tryboot.boot_partitions."+n, "partition %d also used by %s", p, o)
		}
		used[p] = n
	}
	return t, nil
}

func (t *Tryboot) slotOf(part int) (string, error) {
	for n, p := range t.parts {
		if p == part {
			return n, nil
		}
	}
	return "", fmt.Errorf("%w: boot_partition=%d is not a configured slot", ErrAutoboot, part)
}

func (t *Tryboot) partOf(slot string) (int, error) {
	p, ok := t.parts[slot]
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrNoSlot, slot)
	}
	return p, nil
}

// Autoboot reads and checks autoboot.txt: it must parse, name a configured
// slot in [all], and name a configured slot (or nothing) in [tryboot].
func (t *Tryboot) Autoboot() (Autoboot, error) {
	f, err := os.Open(t.autoboot)
	if errors.Is(err, fs.ErrNotExist) {
		return Autoboot{}, fmt.Errorf("read autoboot.txt: %w (is the bootsel partition mounted?)", err)
	}
	if err != nil {
		return Autoboot{}, fmt.Errorf("read autoboot.txt: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxAutoboot+1))
	if err != nil {
		return Autoboot{}, fmt.Errorf("read autoboot.txt: %w", err)
	}
	a, err := ParseAutoboot(b)
	if err != nil {
		return a, fmt.Errorf("read %s: %w", t.autoboot, err)
	}
	if a.Partition == 0 {
		return a, fmt.Errorf("read %s: %w: [all] has no boot_partition", t.autoboot, ErrAutoboot)
	}
	if _, err := t.slotOf(a.Partition); err != nil {
		return a, fmt.Errorf("read %s: [all]: %w", t.autoboot, err)
	}
	if a.Tryboot != 0 {
		if _, err := t.slotOf(a.Tryboot); err != nil {
			return a, fmt.Errorf("read %s: [tryboot]: %w", t.autoboot, err)
		}
	}
	return a, nil
}

// write replaces autoboot.txt with a's canonical form unless it already
// holds exactly that.
func (t *Tryboot) write(a Autoboot) error {
	b := a.Bytes()
	if len(b) > MaxAutoboot {
		return fmt.Errorf("write autoboot.txt: %w: %d bytes", ErrAutoboot, len(b))
	}
	if cur, err := os.ReadFile(t.autoboot); err == nil && bytes.Equal(cur, b) {
		return nil
	}
	return ReplaceFile(t.autoboot, b, 0o644, t.wrap)
}

// FirmwareBoot reads the firmware's report of the running boot.
func (t *Tryboot) FirmwareBoot() (FirmwareBoot, error) { return ReadFirmwareBoot(t.dt) }

// Booted returns the slot whose boot partition the firmware started, from
// its device-tree report. It does not depend on the kernel command line, so
// it also holds when both boot slots carry the same cmdline.txt.
func (t *Tryboot) Booted() (string, error) {
	fb, err := t.FirmwareBoot()
	if err != nil {
		return "", fmt.Errorf("booted slot: %w", err)
	}
	for n, p := range t.parts {
		if p == fb.Partition {
			return n, nil
		}
	}
	return "", fmt.Errorf("%w: the firmware booted partition %d, which is no slot", ErrUnknownBooted, fb.Partition)
}

// tryRequested reports whether the reboot-param file asks for tryboot.
func (t *Tryboot) tryRequested() (bool, error) {
	b, err := os.ReadFile(t.rebootParam)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read reboot parameter: %w", err)
	}
	return slices.Contains(strings.Fields(string(b)), "tryboot"), nil
}

// cancelTry removes a tryboot request from the reboot-param file; any
// other reboot parameter is left alone.
func (t *Tryboot) cancelTry() error {
	req, err := t.tryRequested()
	if err != nil || !req {
		return err
	}
	if err := os.Remove(t.rebootParam); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cancel tryboot: %w", err)
	}
	return nil
}

// State reports the boot selection; see Tryboot.
func (t *Tryboot) State() (BootState, error) {
	a, err := t.Autoboot()
	if err != nil {
		return BootState{}, err
	}
	var bs BootState
	bs.Primary, _ = t.slotOf(a.Partition)
	for _, n := range slices.Sorted(maps.Keys(t.parts)) {
		if p := t.parts[n]; p != a.Partition && p != a.Tryboot {
			bs.Bad = append(bs.Bad, n)
		}
	}
	req, err := t.tryRequested()
	if err != nil {
		return BootState{}, err
	}
	if req && a.Tryboot != 0 && a.Tryboot != a.Partition {
		bs.Pending, _ = t.slotOf(a.Tryboot)
	}
	fb, err := t.FirmwareBoot()
	if err != nil {
		return BootState{}, fmt.Errorf("boot state: %w", err)
	}
	if fb.Tryboot && fb.Partition == a.Tryboot && fb.Partition != a.Partition {
		bs.Trial, _ = t.slotOf(fb.Partition)
	}
	return bs, nil
}

// Try points [tryboot] at slot and asks for a tryboot reboot.
func (t *Tryboot) Try(slot string) error {
	p, err := t.partOf(slot)
	if err != nil {
		return fmt.Errorf("try slot: %w", err)
	}
	a, err := t.Autoboot()
	if err != nil {
		return fmt.Errorf("try slot %s: %w", slot, err)
	}
	if p == a.Partition {
		return fmt.Errorf("try slot %s: %w", slot, ErrTryPrimary)
	}
	n := a
	n.TrybootAB, n.Tryboot = true, p
	if err := t.write(n); err != nil {
		return fmt.Errorf("try slot %s: %w", slot, err)
	}
	if err := os.MkdirAll(filepath.Dir(t.rebootParam), 0o755); err != nil {
		return fmt.Errorf("try slot %s: set reboot parameter: %w", slot, err)
	}
	if err := ReplaceFile(t.rebootParam, []byte(TrybootRebootArg), 0o644, nil); err != nil {
		return fmt.Errorf("try slot %s: set reboot parameter: %w", slot, err)
	}
	return nil
}

// Commit makes slot the [all] partition, the old primary the [tryboot] one.
func (t *Tryboot) Commit(slot string) error {
	p, err := t.partOf(slot)
	if err != nil {
		return fmt.Errorf("commit slot: %w", err)
	}
	a, err := t.Autoboot()
	var n Autoboot
	switch {
	case err == nil:
		n = Autoboot{TrybootAB: true, Partition: p, Tryboot: a.Partition}
		if a.Partition == p {
			n.Tryboot = a.Tryboot
		}
		if n.Tryboot == 0 {
			n.Tryboot = p
		}
	case errors.Is(err, ErrAutoboot):
		// Garbage: the slot committing now is the one known to boot.
		n = Autoboot{TrybootAB: true, Partition: p, Tryboot: p}
	default:
		return fmt.Errorf("commit slot %s: %w", slot, err)
	}
	if err := t.write(n); err != nil {
		return fmt.Errorf("commit slot %s: %w", slot, err)
	}
	if err := t.cancelTry(); err != nil {
		return fmt.Errorf("commit slot %s: %w", slot, err)
	}
	return nil
}

// MarkBad makes sure neither section of autoboot.txt boots slot.
func (t *Tryboot) MarkBad(slot string) error {
	p, err := t.partOf(slot)
	if err != nil {
		return fmt.Errorf("mark slot bad: %w", err)
	}
	a, err := t.Autoboot()
	if err != nil {
		return fmt.Errorf("mark slot %s bad: %w", slot, err)
	}
	n := a
	n.TrybootAB = true
	if a.Partition == p {
		if a.Tryboot == 0 || a.Tryboot == p {
			return fmt.Errorf("mark slot %s bad: %w", slot, ErrNoBootable)
		}
		n.Partition = a.Tryboot
	}
	n.Tryboot = n.Partition
	if err := t.write(n); err != nil {
		return fmt.Errorf("mark slot %s bad: %w", slot, err)
	}
	if err := t.cancelTry(); err != nil {
		return fmt.Errorf("mark slot %s bad: %w", slot, err)
	}
	return nil
}
