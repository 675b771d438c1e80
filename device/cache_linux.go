package device

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to forget the cached pages of f, so that a
// read-back reads the medium. Errors only make the check weaker.
func dropCache(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}
