// Package e2e holds the end-to-end proof of the armv7 target: real U-Boot
// (Debian's u-boot-qemu), the real boot script (targets/armv7/boot.cmd),
// Debian's armmp-lpae kernel and a Go /init under qemu-system-arm -M virt.
//
// The tests live behind the build tag e2e; run them with `make e2e`, which
// fetches the kernel (e2e/fetch.sh) into .cache/e2e first. Each scenario
// prints PASS or FAIL lines; the serial log of a failed scenario is kept
// under .cache/e2e/logs.
package e2e
