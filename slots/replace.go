package slots

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// ReplaceFile replaces path with data the only way that survives a power
// cut on any filesystem, FAT included: write path.tmp, fsync it, rename it
// over path, fsync the directory. The live file is never opened for
// writing, so it always holds the old or the new content. wrap, if not nil,
// wraps the temporary file's writer (tests use it to cut writes short).
func ReplaceFile(path string, data []byte, perm os.FileMode, wrap func(io.Writer) io.Writer) error {
	tmp := path + ".tmp"
	// A leftover from an interrupted write is removed, not truncated.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	var w io.Writer = f
	if wrap != nil {
		w = wrap(f)
	}
	if _, err := w.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("replace %s: write temporary file: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("replace %s: fsync temporary file: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable: fsync of the directory, then of
// its whole filesystem (see syncFS; on FAT the allocation table is not
// covered by the fsyncs). Filesystems that cannot fsync a directory
// (EINVAL) have nothing more to flush there.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	if err := syncFS(d); err != nil {
		return fmt.Errorf("sync filesystem of %s: %w", dir, err)
	}
	return nil
}
