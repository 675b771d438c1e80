# AutoPatcher A/B boot script for the armv7 target (U-Boot, RAUC variables).
# Compile: mkimage -A arm -O linux -T script -C none -d boot.cmd boot.scr
#
# State lives in two single-copy env files on the FAT boot partition
# (virtio 0:1), each 0x4000 bytes (CRC32-LE + data), the same files
# autopatchd writes through fw_env.config ("mirrored files" mode):
#   uboot.env         primary copy
#   uboot-redund.env  second copy; read when the primary fails its CRC
# Variables: BOOT_ORDER ("A B"), BOOT_A_LEFT, BOOT_B_LEFT (tries left).
# The first slot in BOOT_ORDER with tries left is chosen, its counter
# decremented and saved (second copy first, then primary), then its kernel
# and initramfs are loaded from the slot's ext4 partition:
#   A = virtio 0:2, B = virtio 0:3.
# If no slot has tries left, all counters go back to 3 and the first slot
# in the order is chosen the same way. Counters stay <= 9: setexpr is hex.
# Never load the env at ${scriptaddr}: this script runs from there.
#
# Board settings (defaults fit qemu-system-arm -M virt; a board sets them in
# its U-Boot environment or edits them here):
#   ap_dev     block device type          virtio (QEMU), mmc (SD/eMMC)
#   ap_devnum  device number              0
#   ap_env     RAM address for the env    0x43000000 (away from scriptaddr,
#                                         kernel_addr_r and ramdisk_addr_r)
#   ap_console kernel console             ttyAMA0,115200
# A slot may carry /dtb (the board's device tree); without it the device
# tree U-Boot was given (${fdt_addr}: QEMU's, or the Pi firmware's) is used.

if test -z "${ap_dev}"; then setenv ap_dev virtio; fi
if test -z "${ap_devnum}"; then setenv ap_devnum 0; fi
if test -z "${ap_env}"; then setenv ap_env 0x43000000; fi
if test -z "${ap_console}"; then setenv ap_console ttyAMA0,115200; fi
setenv ap_envsize 0x4000

setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
if fatload ${ap_dev} ${ap_devnum}:1 ${ap_env} uboot.env ${ap_envsize} && env import -c ${ap_env} ${ap_envsize} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
	echo "autopatcher: env from uboot.env"
elif fatload ${ap_dev} ${ap_devnum}:1 ${ap_env} uboot-redund.env ${ap_envsize} && env import -c ${ap_env} ${ap_envsize} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
	echo "autopatcher: env from uboot-redund.env"
else
	echo "autopatcher: no valid env file, starting from defaults"
fi
if test -z "${BOOT_ORDER}"; then setenv BOOT_ORDER "A B"; fi
if test -z "${BOOT_A_LEFT}"; then setenv BOOT_A_LEFT 3; fi
if test -z "${BOOT_B_LEFT}"; then setenv BOOT_B_LEFT 3; fi
echo "autopatcher: BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"

setenv ap_slot
setenv ap_pass 1
while test -z "${ap_slot}" && test ${ap_pass} -le 2; do
	for s in ${BOOT_ORDER}; do
		if test -z "${ap_slot}"; then
			if test "${s}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
				setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
				setenv ap_slot A
				setenv ap_part 2
			elif test "${s}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
				setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
				setenv ap_slot B
				setenv ap_part 3
			fi
		fi
	done
	if test -z "${ap_slot}"; then
		echo "autopatcher: no slot has tries left, resetting the counters"
		if test -z "${BOOT_ORDER}"; then setenv BOOT_ORDER "A B"; fi
		setenv BOOT_A_LEFT 3
		setenv BOOT_B_LEFT 3
	fi
	setexpr ap_pass ${ap_pass} + 1
done
if test -z "${ap_slot}"; then
	echo "autopatcher: BOOT_ORDER=${BOOT_ORDER} names no known slot, booting A"
	setenv BOOT_ORDER "A B"
	setenv ap_slot A
	setenv ap_part 2
fi

env export -c -s ${ap_envsize} ${ap_env} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fatwrite ${ap_dev} ${ap_devnum}:1 ${ap_env} uboot-redund.env ${ap_envsize}
fatwrite ${ap_dev} ${ap_devnum}:1 ${ap_env} uboot.env ${ap_envsize}
echo "autopatcher: booting slot ${ap_slot} (BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT})"

setenv bootargs "console=${ap_console} panic=5 autopatcher.slot=${ap_slot} rauc.slot=${ap_slot} ${ap_bootargs}"
setenv ap_fdt ${fdt_addr}
if test -e ${ap_dev} ${ap_devnum}:${ap_part} /dtb; then
	if ext4load ${ap_dev} ${ap_devnum}:${ap_part} ${fdt_addr_r} /dtb; then setenv ap_fdt ${fdt_addr_r}; fi
fi
if ext4load ${ap_dev} ${ap_devnum}:${ap_part} ${kernel_addr_r} /vmlinuz && ext4load ${ap_dev} ${ap_devnum}:${ap_part} ${ramdisk_addr_r} /initrd.img; then
	bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${ap_fdt}
fi
echo "autopatcher: slot ${ap_slot} did not boot, resetting"
reset
