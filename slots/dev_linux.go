package slots

import (
	"os"

	"golang.org/x/sys/unix"
)

// blockDevNum returns the device number of a block device node.
func blockDevNum(path string) (devNum, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return devNum{}, false
	}
	return devNum{unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))}, true
}

// dropCache asks the kernel to forget the cached pages of f in [off, off+n)
// so a following read comes from the device. Best effort.
func dropCache(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}

// startWriteback starts writing [off, off+n) to the device without waiting,
// so the final fsync has less left to do. Best effort.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// waitWriteback writes [off, off+n) to the device and waits until it is
// there (the caller drops the pages with dropCache). Best effort.
func waitWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}

// openExclusive opens a block device with O_EXCL, which Linux refuses with
// EBUSY while the device is mounted or claimed.
const openExclusive = unix.O_EXCL

// directAlign is the alignment of O_DIRECT offsets and lengths used here
// (a page: a multiple of every logical block size).
const directAlign = 4096

// openDirect opens path for reading with O_DIRECT (fails on filesystems
// without it, such as tmpfs).
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
}

// alignedBuf returns n bytes of page-aligned memory and its release.
func alignedBuf(n int) ([]byte, func()) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n), func() {}
	}
	return b, func() { _ = unix.Munmap(b) }
}

// openDirectWrite opens path for writing with O_DIRECT (fails on
// filesystems without it). A block device is already held O_EXCL by the
// Target's first handle; this one shares that claim.
func openDirectWrite(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
}
