//go:build !linux

package slots

import "os"

// syncFS is a no-op where there is no syncfs: fsync of the file and its
// directory is all the platform offers.
func syncFS(*os.File) error { return nil }
