// Package sim is a file-backed bootloader simulator with exactly the
// try/count/fallback semantics of AutoPatcher's U-Boot boot script (the RAUC
// variable scheme), plus a simulated power cycle. The device engine, the
// fleet simulator and many tests run on it instead of real hardware.
//
// # Boot variables
//
// The simulator keeps the same variables as the U-Boot environment:
//
//   - BOOT_ORDER: the slots in boot order, e.g. "A B". A slot marked bad is
//     removed from the order.
//   - BOOT_x_LEFT: tries left for slot x (full = 3 by default).
//
// # Boot script
//
// Every simulated boot (Reboot) runs the boot script:
//
//  1. If BOOT_ORDER is empty (every slot marked bad), it becomes the
//     default order of all slots ("A B"), counters unchanged: a board that
//     boots nothing cannot be repaired over the air.
//  2. Take the first slot in BOOT_ORDER whose BOOT_x_LEFT is above 0,
//     decrement its counter, save, and boot it.
//  3. If no slot in the order has tries left, reset BOOT_x_LEFT of every
//     slot (in the order or not) to the full count and choose again as in
//     step 2.
//
// This is what targets/armv7/boot.cmd does; the simulator follows it exactly.
//
// # Bootloader operations (slots.Bootloader)
//
//   - Try(x): x moves to the front of BOOT_ORDER with BOOT_x_LEFT=1, so the
//     next boot tries x exactly once and the one after falls back.
//   - Commit(x): x moves to the front with full tries.
//   - MarkBad(x): x leaves BOOT_ORDER with BOOT_x_LEFT=0.
//
// The order of the other slots is kept as it was (RAUC's set-primary). A
// slot that boots becomes the running (Booted) slot; if it was the pending
// try it is the Trial until Commit or MarkBad, and the next boot ends the
// trial either way.
//
// # Simulated boots
//
// Reboot runs the boot script and "boots" the chosen slot. Each slot has a
// Behaviour (OK, Hang, Crash; SetBehaviour). A slot that hangs or crashes
// never reaches userspace: the watchdog (Hang) or the kernel's panic reboot
// (Crash) resets the board, and the boot script runs again without anyone
// committing. Reboot keeps cycling until a slot boots OK and returns it; the
// whole history is in Boots. RebootWith overrides the behaviour of the first
// boot of one power cycle only.
//
// # State file
//
// Everything lives in one JSON file, state.json, in the simulator's
// directory, replaced atomically on every change (write state.json.tmp,
// fsync, rename over state.json, fsync the directory), so the file on disk
// is always the old or the new state. Every operation re-reads the file, so
// several Bootloader values (or processes, one at a time) may share a
// directory. TearWrite injects a power cut into a later write: the temporary
// file is left with only its first bytes written and the live state is
// untouched, which tests use to prove power-cut safety.
package sim
