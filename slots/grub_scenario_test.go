package slots

import (
	"fmt"
	"strings"
	"testing"
)

// scenarioBoard is a fake board of either firmware backend, driven the way
// the device engine drives it.
type scenarioBoard interface {
	bootloader() Bootloader
	booted() string
	// powerCycle boots once; hang makes the booted slot hang so that the
	// watchdog resets it and the board boots again by itself.
	powerCycle(hang bool)
}

// steps runs ops on a fake board (tbBoard, grubBoard), failing the test
// at the first error.
func steps(t *testing.T, b interface{ step(op string) error }, ops ...string) {
	t.Helper()
	for _, op := range ops {
		if err := b.step(op); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}
}

type tbScenario struct{ *tbBoard }

func (b tbScenario) bootloader() Bootloader { return b.tb }
func (b tbScenario) booted() string {
	s, err := b.tb.Booted()
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}
func (b tbScenario) powerCycle(hang bool) {
	b.reboot(false)
	if hang {
		b.reboot(false)
	}
}

type grubScenario struct{ *grubBoard }

func (b grubScenario) bootloader() Bootloader { return b.g }
func (b grubScenario) booted() string         { return b.grubBoard.booted }
func (b grubScenario) powerCycle(hang bool) {
	b.reboot()
	if hang {
		b.reboot()
	}
}

// confirm is what the device engine does after every boot with no update
// under way: an uncommitted trial is marked bad, and a boot of the primary
// is committed again (RAUC's mark-good).
func confirm(t *testing.T, b scenarioBoard) {
	t.Helper()
	bs, err := b.bootloader().State()
	if err != nil {
		t.Fatal(err)
	}
	booted := b.booted()
	if bs.Trial != "" && bs.Trial == booted {
		if err := b.bootloader().MarkBad(booted); err != nil {
			t.Fatal(err)
		}
		return
	}
	if bs.Pending == "" && booted == bs.Primary {
		if err := b.bootloader().Commit(booted); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEngineScenarios runs whole update stories against both firmware
// backends and their firmware models; the booted slots must be the same.
func TestEngineScenarios(t *testing.T) {
	tests := []struct {
		name string
		ops  []string
		want string // booted slot after every "boot", "hang" or "trial"
	}{
		{"routine boots stay on A", []string{"boot", "boot", "boot", "boot", "boot"}, "A A A A A"},
		{"update committed", []string{"try B", "trial", "commit", "boot", "boot", "boot", "boot"}, "B B B B B"},
		{"trial hangs, A stays", []string{"try B", "hang", "boot", "boot", "boot", "boot"}, "A A A A A"},
		{"trial fails health checks", []string{"try B", "trial", "bad", "boot", "boot", "boot"}, "B A A A"},
		{"trial lost to power cut, engine marks bad", []string{"try B", "trial", "boot", "bad-target", "boot", "boot"}, "B A A A"},
		{"second update after a failed one", []string{"try B", "hang", "bad-target", "boot", "try B", "trial", "commit", "boot", "boot"}, "A A B B B"},
		{"update back to A", []string{"try B", "trial", "commit", "boot", "try A", "trial", "commit", "boot", "boot"}, "B B A A A"},
	}
	boards := map[string]func(t *testing.T) scenarioBoard{
		"tryboot": func(t *testing.T) scenarioBoard { return tbScenario{newTbBoard(t)} },
		"grub":    func(t *testing.T) scenarioBoard { return grubScenario{newGrubBoard(t)} },
	}
	for kind, mk := range boards {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				b := mk(t)
				var seen []string
				for _, op := range tt.ops {
					switch op {
					case "boot": // a routine power cycle, then the engine confirms
						b.powerCycle(false)
						seen = append(seen, b.booted())
						confirm(t, b)
					case "hang": // the trial boot hangs; the watchdog resets the board
						b.powerCycle(true)
						seen = append(seen, b.booted())
					case "trial": // reboot into the trial; the engine checks health
						b.powerCycle(false)
						seen = append(seen, b.booted())
						bs, err := b.bootloader().State()
						if err != nil {
							t.Fatal(err)
						}
						if bs.Trial != b.booted() {
							t.Fatalf("trial boot of %s: State().Trial = %q", b.booted(), bs.Trial)
						}
					case "commit":
						if err := b.bootloader().Commit(b.booted()); err != nil {
							t.Fatal(err)
						}
					case "bad":
						if err := b.bootloader().MarkBad(b.booted()); err != nil {
							t.Fatal(err)
						}
					case "bad-target":
						if err := b.bootloader().MarkBad("B"); err != nil {
							t.Fatal(err)
						}
					default:
						verb, slot, _ := strings.Cut(op, " ")
						if verb != "try" {
							t.Fatalf("unknown op %q", op)
						}
						if err := b.bootloader().Try(slot); err != nil {
							t.Fatal(err)
						}
					}
				}
				if got := strings.Join(seen, " "); got != tt.want {
					t.Errorf("%s booted %s, want %s", fmt.Sprint(tt.ops), got, tt.want)
				}
			})
		}
	}
}
