package hubtest

import (
	"os"
	"testing"

	"github.com/autopatcher/autopatcher/transport/transporttest"
)

// Mosquitto runs Debian's mosquitto on a free loopback port with password
// authentication for users (user name → password) and the ACL file acl, and
// returns its mqtt:// URL. It is stopped at the end of the test. Without the
// mosquitto binary the test is skipped, or fails under CI=true.
func Mosquitto(t testing.TB, acl string, users map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(acl)
	if err != nil {
		t.Fatalf("read mosquitto ACL: %v", err)
	}
	return transporttest.StartMosquittoACL(t, users, string(b)).URL()
}
