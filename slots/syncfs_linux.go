package slots

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS flushes the whole filesystem that holds f. On FAT, fsync of a file
// and its directory can leave the allocation table itself unwritten, so a
// power cut right after a replace leaves the new name pointing at free
// clusters; syncfs writes the table too.
func syncFS(f *os.File) error {
	return unix.Syncfs(int(f.Fd()))
}
