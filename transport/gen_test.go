package transport

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// msg_gen.go must be what `go generate ./transport` makes from msg.go with the
// msgp version pinned in go.mod.
func TestGeneratedCodeUpToDate(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("go command not found")
		}
	}
	out := filepath.Join(t.TempDir(), "msg_gen.go")
	cmd := exec.Command(goBin, "run", "github.com/tinylib/msgp", "-file", "msg.go", "-o", out, "-tests=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run msgp: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("msg_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("msg_gen.go is stale: run `go generate ./transport` and commit the result")
	}
}
