package bundle

import "time"

// Expired reports whether the manifest carries an expiry that now has
// reached. Readers do not enforce expiry; devices decide with their own
// clock and policy.
func (m *Manifest) Expired(now time.Time) bool {
	return m.Expires != 0 && now.Unix() >= m.Expires
}
