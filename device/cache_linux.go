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

// openDirectRead opens path for reading with O_DIRECT: reads come from the
// medium, never from the page cache. It fails where the file system has
// no O_DIRECT.
func openDirectRead(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
}

// mmapBuf returns n bytes of page-aligned anonymous memory and its release.
func mmapBuf(n int) ([]byte, func(), error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}
