package sim

import (
	"strings"
	"testing"
)

// confirm is what the device engine does after every boot with no update
// under way: an uncommitted trial is marked bad, and a boot of the primary
// is committed again (RAUC's mark-good).
func confirm(t *testing.T, b *Bootloader) {
	t.Helper()
	bs, err := b.State()
	if err != nil {
		t.Fatal(err)
	}
	booted := b.Booted()
	if bs.Trial != "" && bs.Trial == booted {
		if err := b.MarkBad(booted); err != nil {
			t.Fatal(err)
		}
		return
	}
	if bs.Pending == "" && booted == bs.Primary {
		if err := b.Commit(booted); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEngineScenarios runs the same update stories as the tryboot and GRUB
// backends' scenario test (slots/grub_scenario_test.go): the simulator must
// boot the same slots as the real firmware models.
func TestEngineScenarios(t *testing.T) {
	tests := []struct {
		name string
		ops  []string
		want string
	}{
		{"routine boots stay on A", []string{"boot", "boot", "boot", "boot", "boot"}, "A A A A A"},
		{"update committed", []string{"try B", "trial", "commit", "boot", "boot", "boot", "boot"}, "B B B B B"},
		{"trial hangs, A stays", []string{"try B", "hang", "boot", "boot", "boot", "boot"}, "A A A A A"},
		{"trial fails health checks", []string{"try B", "trial", "bad", "boot", "boot", "boot"}, "B A A A"},
		{"trial lost to power cut, engine marks bad", []string{"try B", "trial", "boot", "bad-target", "boot", "boot"}, "B A A A"},
		{"second update after a failed one", []string{"try B", "hang", "bad-target", "boot", "try B", "trial", "commit", "boot", "boot"}, "A A B B B"},
		{"update back to A", []string{"try B", "trial", "commit", "boot", "try A", "trial", "commit", "boot", "boot"}, "B B A A A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var seen []string
			reboot := func(first Behaviour) {
				t.Helper()
				s, err := b.RebootWith(first)
				if err != nil {
					t.Fatal(err)
				}
				seen = append(seen, s)
			}
			for _, op := range tt.ops {
				var err error
				switch op {
				case "boot":
					reboot(Default)
					confirm(t, b)
				case "hang":
					reboot(Hang)
				case "trial":
					reboot(Default)
					if bs, _ := b.State(); bs.Trial != b.Booted() {
						t.Fatalf("trial boot of %s: State().Trial = %q", b.Booted(), bs.Trial)
					}
				case "commit":
					err = b.Commit(b.Booted())
				case "bad":
					err = b.MarkBad(b.Booted())
				case "bad-target":
					err = b.MarkBad("B")
				default:
					verb, slot, _ := strings.Cut(op, " ")
					if verb != "try" {
						t.Fatalf("unknown op %q", op)
					}
					err = b.Try(slot)
				}
				if err != nil {
					t.Fatalf("%s: %v", op, err)
				}
			}
			if got := strings.Join(seen, " "); got != tt.want {
				t.Errorf("%q booted %s, want %s", tt.ops, got, tt.want)
			}
		})
	}
}
