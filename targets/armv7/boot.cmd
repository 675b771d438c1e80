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

setenv ap_dev virtio
setenv ap_env 0x43000000
setenv ap_envsize 0x4000

setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
if fatload ${ap_dev} 0:1 ${ap_env} uboot.env ${ap_envsize} && env import -c ${ap_env} ${ap_envsize} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
	echo "autopatcher: env from uboot.env"
elif fatload ${ap_dev} 0:1 ${ap_env} uboot-redund.env ${ap_envsize} && env import -c ${ap_env} ${ap_envsize} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
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
fatwrite ${ap_dev} 0:1 ${ap_env} uboot-redund.env ${ap_envsize}
fatwrite ${ap_dev} 0:1 ${ap_env} uboot.env ${ap_envsize}
echo "autopatcher: booting slot ${ap_slot} (BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT})"

setenv bootargs "console=ttyAMA0,115200 panic=5 autopatcher.slot=${ap_slot} rauc.slot=${ap_slot}"
if ext4load ${ap_dev} 0:${ap_part} ${kernel_addr_r} /vmlinuz && ext4load ${ap_dev} 0:${ap_part} ${ramdisk_addr_r} /initrd.img; then
	bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr}
fi
echo "autopatcher: slot ${ap_slot} did not boot, resetting"
reset
