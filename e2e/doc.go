// Package e2e holds the end-to-end proof of the armv7 target: real U-Boot
// (Debian's u-boot-qemu), the real boot script (targets/armv7/boot.cmd),
// Debian's armmp-lpae kernel, a Go /init (e2e/guestinit) and autopatchd,
// under qemu-system-arm -M virt without KVM.
//
// Run it with `make e2e`: e2e/fetch.sh downloads the armhf kernel package
// through a private apt state into .cache/e2e, then `go test -tags e2e`
// builds everything (guest binaries for linux/arm GOARM=7, initramfs images,
// ext4 slot images, signed bundles, the disk) under .cache/e2e/work and
// boots it. Every check prints a PASS or FAIL line, timings print as TIME
// lines, and the serial log of a failed test is kept in .cache/e2e/logs.
//
// Tests (build tag e2e):
//
//	TestBootScriptAB        boot.scr alone: A, one try of B without commit, back to A
//	TestSlotsBackendAB      the same with the slots U-Boot backend writing the env in the guest
//	TestEnvSurvivesPowerCut power cut 2 s after an env update, then U-Boot reads it
//	TestAutopatchd          autopatchd on one disk, state carried over:
//	                        1 install v2 into B, trial, commit; 2 v3 fails its
//	                        health check, rollback; 3 v4 hangs, softdog resets,
//	                        try counter runs out, rollback; 4 power cut while v5
//	                        is written, install reported abandoned
//
// What the host reads: the console (U-Boot's "autopatcher: ..." lines from
// boot.scr, the kernel's, and guestinit's "AP-E2E [seconds] ..." lines,
// stamped with CLOCK_BOOTTIME so they line up with printk times), and the
// disk afterwards: uboot.env and uboot-redund.env through mtools, decoded by
// the slots package and by Debian's fw_printenv; autopatchd's state.json through
// debugfs after replaying the ext4 journal on a copy of the data partition.
//
// What the host writes between boots: /e2e-queue on the data partition, a
// one-shot list of commands guestinit runs after starting "autopatchd run"
// ("sleep 3s", "install /data/v2.apb", "status", "reboot", "poweroff").
//
// Console markers guestinit prints for autopatchd: "state at start: S" and
// "state changed: S1 -> S2 ..." when state.json changes (polled every
// 50 ms), "install journal created/removed" for install.json, and
// "hook DIR: AP_..." from the post-commit.d and on-rollback.d hooks.
package e2e
