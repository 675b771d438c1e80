package device

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCapMask(t *testing.T) {
	tests := []struct {
		names []string
		want  uint64
		err   bool
	}{
		{[]string{"chown"}, 1, false},
		{[]string{"CAP_SYS_BOOT", "sys_rawio"}, 1<<22 | 1<<17, false},
		{nil, 0, false},
		{[]string{"sys_everything"}, 0, true},
	}
	for _, tt := range tests {
		got, err := capMask(tt.names)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("capMask(%q) = %#x, %v; want %#x, error %v", tt.names, got, err, tt.want, tt.err)
		}
		if tt.err && !errors.Is(err, ErrConfig) {
			t.Errorf("capMask(%q) error %v is not ErrConfig", tt.names, err)
		}
	}
	if err := DropPrivileges([]string{"all"}); err != nil {
		t.Errorf(`DropPrivileges(["all"]) = %v, want nil`, err)
	}
}

// TestDropCaps drops capabilities on one locked thread (the process keeps
// its own) and checks what a program it starts from there is left with.
func TestDropCaps(t *testing.T) {
	keep, err := capMask(DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		status string
		err    error
	}
	ch := make(chan result, 1)
	start := func() {
		// Never unlocked: the thread ends with the goroutine. The main
		// thread would not end (and /proc/PID/status shows it), so never there.
		runtime.LockOSThread()
		if unix.Gettid() == os.Getpid() {
			ch <- result{err: errMainThread}
			return
		}
		if err := dropCaps(keep, lastCap(), syscall.RawSyscall); err != nil {
			ch <- result{err: err}
			return
		}
		out, err := exec.Command("cat", "/proc/self/status").Output()
		ch <- result{string(out), err}
	}
	var res result
	for range 100 {
		go start()
		if res = <-ch; res.err != errMainThread {
			break
		}
	}
	if os.Geteuid() != 0 {
		if !errors.Is(res.err, syscall.EPERM) {
			t.Fatalf("dropCaps without root = %v, want EPERM", res.err)
		}
		return
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(res.status, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	want := fmt.Sprintf("%016x", keep)
	for _, k := range []string{"CapBnd", "CapPrm", "CapEff"} {
		if fields[k] != want {
			t.Errorf("%s = %s, want %s", k, fields[k], want)
		}
	}
	if fields["CapInh"] != "0000000000000000" || fields["CapAmb"] != "0000000000000000" {
		t.Errorf("CapInh = %s, CapAmb = %s, want none", fields["CapInh"], fields["CapAmb"])
	}
	if fields["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", fields["NoNewPrivs"])
	}
	// The test process itself (its main thread) is unchanged.
	self, _ := os.ReadFile("/proc/" + strconv.Itoa(os.Getpid()) + "/status")
	if strings.Contains(string(self), "NoNewPrivs:\t1") {
		t.Errorf("the test process lost privileges too:\n%s", self)
	}
}

var errMainThread = errors.New("on the main thread")
