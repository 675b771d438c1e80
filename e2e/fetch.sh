#!/usr/bin/env bash
# Fetch Debian's armhf armmp-lpae kernel and the modules the armv7 QEMU target
# needs into a cache folder (default .cache/e2e). Uses a private apt state
# under the cache: never /boot, never the system's apt lists or dpkg status.
# Idempotent: a second run with everything present returns at once.
#
# Output (in $CACHE/kernel):
#   vmlinuz          the zImage U-Boot boots with bootz
#   modules/*.ko     flat copies of the modules, plus modules/order: load order
#   VERSION          the kernel release (e.g. 6.1.0-41-armmp-lpae)
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE=${E2E_CACHE:-$PWD/.cache/e2e}
OUT=$CACHE/kernel
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Modules in load order (dependencies first; checked below with depends=).
# fat/vfat/nls_* mount the boot partition, crc16..ext4 the data partition.
MODULES=(virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
  fat vfat nls_cp437 nls_ascii crc16 mbcache jbd2 crc32c_generic ext4 softdog)

if [[ -s $OUT/vmlinuz && -s $OUT/VERSION && "$(cat "$OUT/modules/order" 2>/dev/null)" == "$(printf '%s\n' "${MODULES[@]}")" ]]; then
  echo "fetch: kernel $(cat "$OUT/VERSION") already in $OUT"
  exit 0
fi

A=$CACHE/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/etc" "$A/debs"
: >"$A/status"
cat >"$A/etc/sources.list" <<SRC
deb [arch=armhf signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm main
deb [arch=armhf signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm-updates main
deb [arch=armhf signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $SECURITY bookworm-security main
SRC
APT=(apt-get -q
  -o APT::Architecture=armhf -o APT::Architectures=armhf
  -o Dir::State::Lists="$A/lists" -o Dir::State::status="$A/status"
  -o Dir::Cache="$A/cache" -o Dir::Etc::sourcelist="$A/etc/sources.list"
  -o Dir::Etc::sourceparts=/nonexistent -o Debug::NoLocking=1)

DEB=$(ls -t "$A"/debs/linux-image-6.1.0-*-armmp-lpae_*.deb 2>/dev/null | head -1 || true)
if [[ -z $DEB ]]; then
echo "fetch: apt update (armhf, private state in $A)"
# A list that fails to download (a mirror mid-sync) is only a warning: any
# suite that carries an armmp-lpae kernel is enough.
"${APT[@]}" update >"$A/update.log" 2>&1 || grep -E '^(E|W):' "$A/update.log" | sed 's/^/fetch: warning: /' >&2

# Newest linux-image-6.1.0-N-armmp-lpae (not the -dbg or -unsigned packages).
PKG=$(apt-cache -o APT::Architecture=armhf -o APT::Architectures=armhf \
  -o Dir::State::Lists="$A/lists" -o Dir::State::status="$A/status" -o Dir::Cache="$A/cache" \
  -o Dir::Etc::sourcelist="$A/etc/sources.list" -o Dir::Etc::sourceparts=/nonexistent \
  pkgnames linux-image-6.1.0- | grep -E '^linux-image-6\.1\.0-[0-9]+-armmp-lpae$' | sort -V | tail -1)
[[ -n $PKG ]] || { echo "fetch: no linux-image-6.1.0-*-armmp-lpae package found" >&2; exit 1; }
echo "fetch: downloading $PKG"
(cd "$A/debs" && "${APT[@]}" download "$PKG:armhf" >/dev/null)
DEB=$(ls -t "$A"/debs/"$PKG"_*.deb | head -1)
fi

X=$CACHE/x
rm -rf "$X" && mkdir -p "$X"
dpkg-deb -x "$DEB" "$X"
VMLINUZ=$(ls "$X"/boot/vmlinuz-*)
REL=${VMLINUZ##*/vmlinuz-}

TMP=$OUT.tmp
rm -rf "$TMP" && mkdir -p "$TMP/modules"
cp "$VMLINUZ" "$TMP/vmlinuz"
for m in "${MODULES[@]}"; do
  f=$(find "$X/lib/modules/$REL" -name "$m.ko" -o -name "$m.ko.xz" | head -1)
  [[ -n $f ]] || { echo "fetch: module $m not in $PKG" >&2; exit 1; }
  case $f in *.xz) xz -dc "$f" >"$TMP/modules/$m.ko" ;; *) cp "$f" "$TMP/modules/$m.ko" ;; esac
done
# Every dependency must be loaded earlier in the list (or built in).
loaded=" "
for m in "${MODULES[@]}"; do
  deps=$(strings "$TMP/modules/$m.ko" | sed -n 's/^depends=//p' | tr ',' ' ')
  for d in $deps; do
    [[ $loaded == *" $d "* ]] || { echo "fetch: $m depends on $d, which is not loaded before it" >&2; exit 1; }
  done
  loaded+="$m "
  echo "$m" >>"$TMP/modules/order"
done
echo "$REL" >"$TMP/VERSION"
rm -rf "$OUT" && mv "$TMP" "$OUT"
rm -rf "$X"
echo "fetch: kernel $REL and ${#MODULES[@]} modules in $OUT"
