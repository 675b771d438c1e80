// Package slots describes a board's A/B slots, tells which slot is running,
// writes images into the inactive slot, and drives the bootloader that
// chooses between the slots (U-Boot env, Raspberry Pi tryboot, GRUB env, or
// the simulator in slots/sim).
//
// # Slot config (YAML)
//
// LoadConfig / ParseConfig read the file; unknown keys are errors and every
// validation error names the field (e.g. "slots.rootfs.b.device: required").
// Fields and defaults:
//
//	bootloader:
//	  type: uboot            # uboot | tryboot | grub | sim; required
//	  uboot:
//	    fw_env_config: /etc/fw_env.config  # env location and size
//	    mirror: ""           # second file of the mirrored-files mode; "" = off
//	    scheme: rauc         # rauc | mender
//	    tries: 3             # boot attempts of a committed slot, 2..9
//	    parts: {A: 2, B: 3}  # mender_boot_part per boot name (mender only)
//	  tryboot: {...}         # see tryboot.go
//	  grub: {env_path: ...}  # see the GRUB backend
//	  sim: {dir: ...}        # state directory of slots/sim; required for sim
//	slots:                   # slot classes: rootfs, boot, firmware, ...
//	  rootfs:
//	    a:
//	      device: /dev/vda2  # required; unique across the file
//	      type: block        # block | file | dir
//	      size: 0            # bytes, K/M/G or KiB/MiB/GiB suffix, 0x hex;
//	                         # 0 = the block device's size; required for file
//	      boot_name: A       # A for a, B for b; no spaces, quotes or '='
//	      verify: true       # read-back sha256 check; default true for
//	                         # block, false for file
//	    b: {...}
//	paths:                   # kernel interfaces, injectable for tests
//	  cmdline: /proc/cmdline
//	  mountinfo: /proc/self/mountinfo
//	  dev_disk: /dev/disk
//	  sys: /sys
//
// The boot names of the first class in sorted order are the names the
// bootloader knows (Config.BootNames); every class uses the same two.
//
// # Which slot is running
//
// Config.Booted(cmdline) checks, in order: autopatcher.slot=X, rauc.slot=X
// (X must be a boot name of the config), then root= compared with every
// slot device. root= may be a device path or PARTUUID=, UUID=, PARTLABEL=,
// LABEL=, looked up as links under paths.dev_disk (by-partuuid, …; tried as
// written, lower case and upper case). Two paths match if they are equal
// after resolving links, or are block devices with the same device number.
// Anything else is ErrUnknownBooted. The package-level Booted(cmdline)
// reads only the two slot parameters. Config.Inactive(class) and
// Config.Active(class) read paths.cmdline.
//
// # Writing a slot
//
// Config.OpenTarget(slot) (or OpenTarget with explicit TargetOptions)
// refuses, before opening anything: directory slots (ErrDirSlot), an
// unknown booted slot (ErrUnknownBooted), the booted slot or the device
// of root= (ErrBootedSlot), and a device that is mounted (ErrMounted: the device path, or a link to
// it, is a mount source in mountinfo, its device number is a mounted st_dev,
// or the slot file backs a loop device, per paths.sys, that is mounted).
// Block devices are also opened O_EXCL, which Linux refuses while they are
// mounted. A configured size larger than the block device is an error. A
// Target never touches bootloader state.
//
//   - WriteAt(p, off): for chunks in any order (MQTT transport, delta copies
//     from the active slot); a write past the slot size is ErrTooLarge.
//   - ReadAt, Sync, Close.
//   - Verify(n, sum): fsync and read the first n bytes back from the
//     device (see read-back below); a sha256 mismatch is ErrVerify.
//   - Finish(n, sum): a file slot is truncated to n; then Verify if the
//     slot's verify is on and sum is set, else Sync.
//   - Write(ctx, r, size, sum): stream from offset 0 in 4 MiB blocks, one
//     goroutine reading the input into page-aligned buffers and one hashing
//     while the caller writes. Whole blocks are written from those buffers
//     through a second O_DIRECT handle where the filesystem supports it (no
//     copy into the page cache, no writeback left for the final fsync);
//     the short last block, and everything where O_DIRECT is missing
//     (tmpfs), goes through the page cache, with writeback of each 32 MiB
//     started at once (sync_file_range) so the final fsync has little left.
//     With read-back on, each block written with O_DIRECT is read back
//     right away, and each buffered window once its writeback finished and
//     its cached pages were dropped, while later blocks are still being
//     written (one goroutine reading back, one hashing, three 4 MiB buffers
//     between them for the whole write); the rest is read back after the
//     final fsync, all into one sha256. size -1 reads to EOF. Input longer
//     than the slot is ErrTooLarge, shorter than size ErrShortInput.
//     Without read-back the stream is hashed while it is written and a
//     sha256 other than sum is ErrDigest; with read-back only the read-back
//     is hashed (one pass, not two) and any mismatch, of the input or of
//     the device, is ErrVerify.
//
// Read-back reads through a second O_DIRECT handle on the device when the
// filesystem supports it (page-aligned buffers, whole pages), so the bytes
// come from the device and not the page cache, for block devices and file
// slots alike (on a file slot, "the device" is the filesystem's blocks: an
// O_DIRECT read of ext4 reads the disk, after writing back any dirty
// cached pages of the range); elsewhere (tmpfs) it drops the cached pages
// with posix_fadvise first, which for tmpfs can only re-read memory.
//
// # Write speed and its limits
//
// BenchmarkSlotWrite compares Write of 256 MiB (with fsync, with and
// without read-back) with a plain `dd bs=4M conv=fsync,notrunc` of the
// same bytes in the same run (ratio and verify-ratio, goal ≥ 0.90), and
// reports the ratios to the faster of that and `dd oflag=direct` as well
// (*-direct). The slot file exists at full size and every run overwrites
// it in place, as a partition is written. Either variant of Write hashes
// every byte once (input or read-back) and a sha256 cannot be split
// across cores, while dd hashes nothing; so the ratio to dd is at most
// sha256/dd (hash-ceiling). The read-back also makes the device read
// every byte after writing it: where the device cannot read and write at
// full speed at once, the ratio with read-back is at most dd / (fastest dd
// + dd-read) (verify-ceiling and verify-ceiling-direct, dd-read being `dd
// iflag=direct` of the written slot); duplex measures whether the device
// can.
//
// Measured on a 2-core VM with a host-cached virtio disk (ext4, one
// hardware queue): plain dd ≈ 1420–1510 MiB/s, dd with O_DIRECT ≈
// 1640–1960, O_DIRECT read ≈ 1600–2330, sha256 ≈ 1600–1750 on one core.
// Without read-back Write gives 0.74–0.95 of plain dd over the day's
// runs. With read-back it gives 0.64–0.74 of plain dd against a
// verify-ceiling of 0.54–0.74 in the same runs: the device moves twice
// the bytes dd moves, and this disk overlaps reads and writes only a
// little (duplex 0.9–1.3: a `dd oflag=direct` write and a `dd
// iflag=direct` read of 256 MiB run together take about as long as one
// after the other). Even a writer that overlapped its read-back as well
// as duplex allows would reach only verify-ceiling × duplex, 0.64–0.86
// in those runs, so the 0.90 goal for read-back is out of reach on this
// disk for any writer. It needs a device that reads while it writes
// (duplex near 2, as multi-queue NVMe does) or one that reads about nine
// times faster than it writes; SD cards, eMMC and USB flash, which read
// two to five times faster, allow about 0.65–0.85.

// # U-Boot environment
//
// The binary format is libubootenv's (fw_printenv, fw_setenv):
//
//   - fw_env.config: "device offset size [sector-size [sectors]]" per line,
//     '#' comments at line start, lines with fewer than three fields
//     skipped. offset is a C integer (0x hex, 0 octal, decimal); size,
//     sector size and sector count are always hex ("4000" = 0x4000). One
//     line = single env, two lines = redundant env (equal sizes).
//   - A copy is CRC-32 (IEEE, little-endian) of the data area, then in a
//     redundant env one flags byte, then the data area: "name=value\0" …
//     "\0", padded to the env size. The CRC covers the whole data area
//     including padding, not the flags. We write names in byte order and
//     pad with 0x00; on reading, entries without '=' are skipped and a later
//     duplicate wins.
//   - Live copy of a redundant env: if one CRC is valid, that copy; if both,
//     flags 255 against 0 → the 0 one, else the larger flags, equal → the
//     first copy.
//   - A write goes to the other copy, in place, with flags = live flags + 1
//     (wrapping 255 → 0), then fsync. The live copy is untouched, so a torn
//     write leaves it live. The lock file /var/lock/fw_printenv.lock is
//     taken with flock for every read and write, as fw_setenv does.
//   - Single env: a regular file that holds exactly the env is replaced
//     atomically (temporary file, fsync, rename, fsync of the directory);
//     an env on a device or inside a larger file is written in place, which
//     a power cut can corrupt — use a redundant env there.
//
// Mirrored files (bootloader.uboot.mirror set; the armv7 QEMU target): two
// single-layout files (CRC + data, no flags byte) of the size in
// fw_env.config, the primary named there (uboot.env) and the mirror
// (uboot-redund.env), as U-Boot's `env import -c` / `env export -c` use
// them. Reading takes the primary if its CRC is valid, else the mirror. A
// write replaces the mirror first, then the primary, each atomically as
// above; a missing or short file just counts as invalid.
//
// Safe behaviour on bad input: if no copy is valid, Read and every
// Bootloader operation return ErrNoValidEnv and nothing is written — U-Boot
// would be running its built-in default env, which Linux cannot know, and
// writing a made-up env could hide the real problem; provisioning (mkenvimage,
// or the boot script's first run) must create the env. When the env file is
// larger than fw_env.config says and holds a valid env of its own size, the
// error names both sizes (ErrEnvSize); a file shorter than the configured
// size is ErrEnvSize; a missing device is ErrEnvDevice; variables that do
// not fit are ErrEnvTooLarge and leave the env as it was; a name that is
// empty or has '=', or a value with NUL, is ErrEnvVar. An operation that
// changes nothing writes nothing.
//
// # U-Boot RAUC scheme (default)
//
// Variables: BOOT_ORDER (boot names separated by spaces, e.g. "A B") and
// BOOT_x_LEFT (tries left, decimal). The boot script (targets/armv7/boot.cmd)
// takes the first slot in BOOT_ORDER with tries left, decrements its
// counter, saves, and boots it with autopatcher.slot=X rauc.slot=X on the
// kernel command line; if no slot has tries left it resets every counter to
// tries and boots the first of the order. Every operation is one env write:
//
//   - Try(X): BOOT_ORDER = X then the other slots of the old order, in
//     their order; BOOT_X_LEFT=1. Refused (ErrNoFallback) if no slot after X
//     has tries left, since the failed try would leave nothing to boot.
//   - Commit(X): BOOT_ORDER = X then the others; BOOT_X_LEFT=tries. A slot
//     not in the order stays out. Committing the running slot after every
//     good boot keeps its counter full.
//   - MarkBad(X): X leaves BOOT_ORDER; BOOT_X_LEFT=0. Refused
//     (ErrNoFallback) if no other slot in the order has tries left.
//
// Names in BOOT_ORDER that are not boot names are ignored (and dropped by
// the next write); a missing or non-numeric counter counts as 0.
//
// State() derives, with booted the slot of the kernel command line
// (paths.cmdline; unknown → no Trial):
//
//   - Bad: boot names not in BOOT_ORDER.
//   - Tries: BOOT_x_LEFT of every boot name.
//   - Trial = booted, if booted is in the order with 0 tries left and a
//     slot after it in the order has tries left: the running boot used the
//     last try, and the next boot falls back unless it is committed.
//   - Pending = the first slot in the order with tries left, if it has
//     exactly 1 try and a slot after it has tries left: the next boot tries
//     it once, then falls back. (A committed slot booted twice without a
//     Commit looks the same and is reported the same: its next boot really
//     is its last.)
//   - Primary = the fallback — the first slot after Pending or Trial with
//     tries left (the last committed slot, which Try leaves in second
//     place); otherwise the first slot in the order with tries left; if none
//     has tries left, the first of the order (the script resets counters).
//
// # U-Boot Mender scheme (scheme: mender)
//
// Variables: mender_boot_part (the partition number of parts), also
// mender_boot_part_hex, upgrade_available, bootcount, bootlimit. U-Boot
// increments bootcount on every boot while upgrade_available=1 and runs
// altbootcmd (which switches back) once bootcount > bootlimit.
//
//   - Try(X): mender_boot_part=parts[X] (and _hex), upgrade_available=1,
//     bootcount=0, bootlimit=1, in one write.
//   - Commit(X): mender_boot_part=parts[X], upgrade_available=0,
//     bootcount=0.
//   - MarkBad(X): if X is mender_boot_part, switch it to the other slot;
//     upgrade_available=0, bootcount=0.
//   - State: with upgrade_available≠1, Primary = the slot of
//     mender_boot_part. With upgrade_available=1, Primary = the other slot,
//     Tries[part] = bootlimit − bootcount; bootcount 0 → Pending = part;
//     bootcount ≥ 1 and the running slot is part (or unknown) → Trial.
//
// # Opening a backend
//
// Open(cfg) builds the backend named by bootloader.type. Backends register
// a Constructor with Register(type, fn): "uboot", "tryboot" and "grub"
// register themselves from their files' init in this package;
// "sim" lives in slots/sim, which imports slots, so a program that wants it
// imports it for effect:
//
//	import _ "github.com/autopatcher/autopatcher/slots/sim"
//
// An unregistered type is ErrUnknownBootloader.
package slots
