package slots

// Bootloader is what every boot-selection backend (U-Boot env, Raspberry Pi
// tryboot, GRUB env, the simulator) implements. Slot names are the boot
// names of the slot config ("A", "B").
type Bootloader interface {
	// State reports what the bootloader will boot next and what it knows of
	// the running boot.
	State() (BootState, error)
	// Try arranges for slot to be booted exactly once on the next boot; if
	// that boot is not committed, the bootloader falls back to the primary.
	Try(slot string) error
	// Commit makes slot the primary with its full tries.
	Commit(slot string) error
	// MarkBad takes slot out of the boot order until it is tried again.
	MarkBad(slot string) error
}

// BootState is a backend's view of boot selection.
type BootState struct {
	Primary string         // slot booted by default
	Pending string         // slot that the next boot tries once, "" if none
	Trial   string         // the running boot is an uncommitted trial of this slot, "" if not or unknown
	Tries   map[string]int // tries left per slot, for backends that count them
	Bad     []string       // slots out of the boot order
}
