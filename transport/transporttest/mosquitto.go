package transporttest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/transport"
)

// mosquittoACL mirrors transport.Allowed for mosquitto's acl_file: the hub
// owns ap/v1/, a device (user name = client id) its own subtree.
const mosquittoACL = `user ` + transport.Hub + `
topic readwrite ap/v1/#

pattern write ap/v1/d/%u/hello
pattern write ap/v1/d/%u/status
pattern write ap/v1/d/%u/get
pattern read ap/v1/d/%u/cmd
pattern read ap/v1/d/%u/data
pattern read ap/v1/d/%u/offer
`

// Mosquitto is a mosquitto broker process on a loopback port.
type Mosquitto struct {
	Addr    string
	cmd     *exec.Cmd
	logPath string
}

func (m *Mosquitto) output() string {
	b, _ := os.ReadFile(m.logPath)
	return strings.TrimSpace(string(b))
}

// URL is the broker's mqtt:// URL.
func (m *Mosquitto) URL() string { return "mqtt://" + m.Addr }

// StartMosquitto runs Debian's mosquitto with password authentication
// (creds: user name → password; the client id is the user name) and the ACL
// above, on a free loopback port. It skips the test when mosquitto is not
// installed, unless CI=true, where that is a failure. The process is killed
// at the end of the test.
func StartMosquitto(t testing.TB, creds map[string]string) *Mosquitto {
	t.Helper()
	return StartMosquittoACL(t, creds, mosquittoACL)
}

// StartMosquittoACL is StartMosquitto with acl as the content of mosquitto's
// acl_file instead of the built-in one, for callers testing a shipped ACL.
func StartMosquittoACL(t testing.TB, creds map[string]string, acl string) *Mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto not installed (scripts/install-deps installs it)")
		}
		t.Skip("mosquitto not installed; run scripts/install-deps")
	}
	passwd, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto_passwd not installed")
		}
		t.Skip("mosquitto_passwd not installed")
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	if err := os.WriteFile(pwFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for user, pw := range creds {
		if out, err := exec.Command(passwd, "-b", pwFile, user, pw).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %s: %v: %s", user, err, out)
		}
	}
	aclFile := filepath.Join(dir, "acl")
	if err := os.WriteFile(aclFile, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := filepath.Join(dir, "mosquitto.conf")
	// Started as root, mosquitto switches to the user "mosquitto", which
	// cannot read the test's private directory: stay who we are.
	me := "root"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	cfg := fmt.Sprintf(`user %s
listener %d 127.0.0.1
allow_anonymous false
use_username_as_clientid true
password_file %s
acl_file %s
persistence false
log_dest stderr
log_type error
log_type warning
`, me, port, pwFile, aclFile)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	m := &Mosquitto{Addr: fmt.Sprintf("127.0.0.1:%d", port), logPath: logf.Name()}
	m.cmd = exec.Command(bin, "-c", conf)
	m.cmd.Stdout = logf
	m.cmd.Stderr = logf
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = m.cmd.Process.Kill() // by PID: only the process started here
		<-exited
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", m.output())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("mosquitto exited at start:\n%s", m.output())
		default:
		}
		c, err := net.DialTimeout("tcp", m.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s: %v\n%s", m.Addr, err, m.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
