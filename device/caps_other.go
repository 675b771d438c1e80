//go:build !linux

package device

// DropPrivileges is only implemented on Linux; elsewhere it returns
// ErrCapsUnsupported unless keep is ["all"].
func DropPrivileges(keep []string) error {
	if keepsAll(keep) {
		return nil
	}
	if _, err := capMask(keep); err != nil {
		return err
	}
	return ErrCapsUnsupported
}
