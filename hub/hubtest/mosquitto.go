package hubtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Mosquitto runs Debian's mosquitto on a free loopback port with password
// authentication for users (user name → password) and the ACL file acl, and
// returns its mqtt:// URL. It is stopped at the end of the test. Without the
// mosquitto binary the test is skipped, or fails under CI=true.
func Mosquitto(t testing.TB, acl string, users map[string]string) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err == nil {
		_, err = exec.LookPath("mosquitto_passwd")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto and mosquitto_passwd are required under CI: %v", err)
		}
		t.Skipf("mosquitto not installed (%v); run scripts/install-deps", err)
	}
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	first := true
	for u, p := range users {
		args := []string{"-b", passwd, u, p}
		if first {
			args = append([]string{"-c"}, args...)
			first = false
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %s: %v\n%s", u, err, out)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	var b strings.Builder
	fmt.Fprintf(&b, "listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\n", port, passwd, acl)
	if os.Getuid() == 0 {
		b.WriteString("user root\n")
	}
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	logf, _ := os.Create(filepath.Join(dir, "mosquitto.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("mosquitto did not start listening on %s:\n%s", addr, log)
		}
	}
	return "mqtt://" + addr
}
