package gcflags

import (
	"fmt"
	"os"
	"strings"
)

// Read returns the go build arguments of the flags file at path: one
// "-gcflags=<line>" per line that is neither empty nor a # comment, in file
// order.
func Read(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read gcflags: %w", err)
	}
	return parse(string(b)), nil
}

// parse is Read on the file's text.
func parse(text string) []string {
	var args []string
	for _, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			args = append(args, "-gcflags="+line)
		}
	}
	return args
}
