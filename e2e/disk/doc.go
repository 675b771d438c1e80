// Package disk builds the bootable disk image of the armv7 QEMU target
// without root privileges or loop mounts.
//
// Layout (MBR, 512-byte sectors; the numbers live in Layout and must agree
// with targets/armv7/boot.cmd, fw_env.config and slots.yaml):
//
//	p1  1 MiB  +16 MiB  FAT16, bootable  boot.scr, uboot.env, uboot-redund.env
//	p2 17 MiB  +32 MiB  slot A           raw ext4 image: /vmlinuz, /initrd.img
//	p3 49 MiB  +32 MiB  slot B           raw ext4 image: /vmlinuz, /initrd.img
//	p4 81 MiB  +96 MiB  ext4 data        bundles, autopatchd state
//
// A slot is one ext4 filesystem image holding a kernel and its initramfs;
// U-Boot reads both with ext4load. Updating a slot means streaming a new
// filesystem image over the whole inactive partition, which is what an
// image component of a bundle is. Linux never mounts the slots (the
// system runs from the initramfs), so the writer is never racing a mount.
//
// The data partition is ext4 (with a journal): autopatchd keeps the previous
// copy of its state as a hard link, which FAT cannot make.
//
// Partitions are built as separate files (mkfs.vfat + mcopy, mkfs.ext4 -d)
// and copied into the image at their offsets behind a Go-written MBR.
// The initramfs is a newc cpio archive written in Go (so /dev/console can be
// a device node without mknod), gzip-compressed.
package disk
