//go:build !linux

package slots

import (
	"errors"
	"fmt"
)

// RebootTryboot is only available on Linux.
func RebootTryboot() error {
	return fmt.Errorf("reboot with tryboot: %w", errors.ErrUnsupported)
}
