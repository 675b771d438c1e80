package gcflags

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string
	}{
		{"empty", "", nil},
		{"comments and blanks only", "# a\n\n   \n\t# b\n", nil},
		{"order kept", "all=-l\nruntime=\nio=\n", []string{"-gcflags=all=-l", "-gcflags=runtime=", "-gcflags=io="}},
		{"trimmed, CRLF, no final newline", "  all=-l \r\n\tsync/...=\r\nerrors=", []string{"-gcflags=all=-l", "-gcflags=sync/...=", "-gcflags=errors="}},
		{"comment after indentation", "  # all=-N\nall=-l", []string{"-gcflags=all=-l"}},
		{"# inside a line is kept", "all=-d=x#y", []string{"-gcflags=all=-d=x#y"}},
	}
	for _, tc := range tests {
		if got := parse(tc.text); !slices.Equal(got, tc.want) {
			t.Errorf("%s: parse(%q) = %q, want %q", tc.name, tc.text, got, tc.want)
		}
	}
}

func TestRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "autopatchd.gcflags")
	if err := os.WriteFile(p, []byte("# flags\nall=-l\ngithub.com/autopatcher/autopatcher/...=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if want := []string{"-gcflags=all=-l", "-gcflags=github.com/autopatcher/autopatcher/...="}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Read = %q, %v; want %q", got, err, want)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "read gcflags") {
		t.Errorf("Read(missing) = %v, want a read gcflags error wrapping fs.ErrNotExist", err)
	}
}

// TestRepositoryFile: the file the builds use parses to at least one flag,
// none with white space inside (the Makefile splits the flags on it).
func TestRepositoryFile(t *testing.T) {
	got, err := Read(filepath.Join("..", "..", "scripts", "autopatchd.gcflags"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		t.Errorf("no flags in scripts/autopatchd.gcflags")
	}
	for _, a := range got {
		if strings.ContainsAny(a, " \t") {
			t.Errorf("flag %q has white space inside", a)
		}
	}
}
