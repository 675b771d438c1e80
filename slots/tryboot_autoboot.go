package slots

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The Raspberry Pi firmware reads autoboot.txt from the first FAT partition
// before anything else. It holds at most 512 bytes and knows the conditional
// sections [all], [none] and [tryboot] and two settings:
//
//	[all]
//	tryboot_a_b=1      # with the tryboot flag, load config.txt from the tryboot partition
//	boot_partition=2   # MBR partition booted normally
//	[tryboot]
//	boot_partition=3   # MBR partition booted once after `reboot "0 tryboot"`
//
// ParseAutoboot is strict, because a typo here is silently ignored by the
// firmware and bricks the A/B switch:
//   - lines are `key=value`, `[section]`, blank, or `#` comments; spaces
//     around them and CRLF endings are accepted;
//   - lines before the first section belong to [all], as in config.txt;
//   - sections other than [all], [none], [tryboot] are refused;
//   - keys other than boot_partition and tryboot_a_b are refused (in [none]
//     anything goes: the firmware never applies that section);
//   - a key given twice in the same section is refused, and so is
//     tryboot_a_b in [tryboot];
//   - boot_partition must be 1..4 (MBR primaries; 0, "the default", is not
//     a slot), tryboot_a_b 0 or 1;
//   - more than 512 bytes is refused (the firmware would cut the file).
//
// Bytes always writes the canonical form above: [none] sections and
// comments are not kept, and tryboot_a_b=1 is always set.

// MaxAutoboot is the largest autoboot.txt the firmware reads.
const MaxAutoboot = 512

// ErrAutoboot is wrapped by every autoboot.txt parse error.
var ErrAutoboot = errors.New("slots: bad autoboot.txt")

// Autoboot is the content of autoboot.txt.
type Autoboot struct {
	TrybootAB bool // [all] tryboot_a_b=1
	Partition int  // [all] boot_partition, 0 if absent
	Tryboot   int  // [tryboot] boot_partition, 0 if absent
}

// ParseAutoboot parses autoboot.txt strictly (see above).
func ParseAutoboot(b []byte) (Autoboot, error) {
	var a Autoboot
	if len(b) > MaxAutoboot {
		return a, fmt.Errorf("%w: %d bytes, the firmware reads at most %d", ErrAutoboot, len(b), MaxAutoboot)
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return a, fmt.Errorf("%w: NUL byte", ErrAutoboot)
	}
	section := "all"
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return a, fmt.Errorf("%w: line %d: unterminated section %q", ErrAutoboot, n, line)
			}
			switch s := line[1 : len(line)-1]; s {
			case "all", "none", "tryboot":
				section = s
			default:
				return a, fmt.Errorf("%w: line %d: section [%s] is not [all], [none] or [tryboot]", ErrAutoboot, n, s)
			}
			continue
		}
		if section == "none" {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok {
			return a, fmt.Errorf("%w: line %d: %q is not key=value", ErrAutoboot, n, line)
		}
		id := section + "." + key
		if seen[id] {
			return a, fmt.Errorf("%w: line %d: %s given twice in [%s]", ErrAutoboot, n, key, section)
		}
		seen[id] = true
		switch {
		case key == "boot_partition":
			p, err := strconv.Atoi(val)
			if err != nil || p < 1 || p > 4 {
				return a, fmt.Errorf("%w: line %d: boot_partition=%q is not an MBR primary partition 1..4", ErrAutoboot, n, val)
			}
			if section == "all" {
				a.Partition = p
			} else {
				a.Tryboot = p
			}
		case key == "tryboot_a_b" && section == "all":
			switch val {
			case "0":
				a.TrybootAB = false
			case "1":
				a.TrybootAB = true
			default:
				return a, fmt.Errorf("%w: line %d: tryboot_a_b=%q is not 0 or 1", ErrAutoboot, n, val)
			}
		default:
			return a, fmt.Errorf("%w: line %d: unknown setting %q in [%s]", ErrAutoboot, n, key, section)
		}
	}
	return a, nil
}

// Bytes returns the canonical autoboot.txt, tryboot_a_b=1 always set. A
// zero Tryboot partition omits the [tryboot] section.
func (a Autoboot) Bytes() []byte {
	var b strings.Builder
	b.WriteString("[all]\ntryboot_a_b=1\n")
	if a.Partition != 0 {
		fmt.Fprintf(&b, "boot_partition=%d\n", a.Partition)
	}
	if a.Tryboot != 0 {
		fmt.Fprintf(&b, "[tryboot]\nboot_partition=%d\n", a.Tryboot)
	}
	return []byte(b.String())
}
