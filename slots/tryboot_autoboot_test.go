package slots

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAutoboot(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Autoboot
	}{
		{"firmware docs example", "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n",
			Autoboot{TrybootAB: true, Partition: 2, Tryboot: 3}},
		{"crlf, comments, blanks, spaces", "# A/B\r\n\r\n[all]\r\n  tryboot_a_b = 1 \r\nboot_partition=3\r\n[tryboot]\r\nboot_partition=2",
			Autoboot{TrybootAB: true, Partition: 3, Tryboot: 2}},
		{"lines before a section are [all]", "boot_partition=2\n", Autoboot{Partition: 2}},
		{"[none] is never applied", "[all]\nboot_partition=2\n[none]\nanything=goes\nboot_partition=9\n[tryboot]\nboot_partition=3\n",
			Autoboot{Partition: 2, Tryboot: 3}},
		{"tryboot_a_b=0", "[all]\ntryboot_a_b=0\nboot_partition=4\n", Autoboot{Partition: 4}},
		{"sections may repeat", "[all]\nboot_partition=2\n[tryboot]\nboot_partition=3\n[all]\ntryboot_a_b=1\n",
			Autoboot{TrybootAB: true, Partition: 2, Tryboot: 3}},
		{"empty", "", Autoboot{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAutoboot([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseAutoboot: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseAutoboot = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseAutobootRefuses(t *testing.T) {
	tests := []struct{ name, in, msg string }{
		{"oversized", "[all]\nboot_partition=2\n" + strings.Repeat("#", 500) + "\n", "at most 512"},
		{"binary garbage", "\x00\xff\xfe[all]", "NUL"},
		{"text garbage", "hello world\n", "not key=value"},
		{"unknown section", "[pi4]\nboot_partition=2\n", "section [pi4]"},
		{"unterminated section", "[all\nboot_partition=2\n", "unterminated"},
		{"unknown key", "[all]\nboot_parition=2\n", `unknown setting "boot_parition"`},
		{"config.txt key", "[all]\nkernel=kernel8.img\n", "unknown setting"},
		{"tryboot_a_b in [tryboot]", "[tryboot]\ntryboot_a_b=1\n", "unknown setting"},
		{"duplicate", "[all]\nboot_partition=2\nboot_partition=3\n", "twice"},
		{"partition 0", "[all]\nboot_partition=0\n", "1..4"},
		{"partition 5", "[all]\nboot_partition=5\n", "1..4"},
		{"partition word", "[all]\nboot_partition=two\n", "1..4"},
		{"tryboot_a_b=yes", "[all]\ntryboot_a_b=yes\n", "0 or 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAutoboot([]byte(tt.in))
			if !errors.Is(err, ErrAutoboot) {
				t.Fatalf("ParseAutoboot error = %v, want ErrAutoboot", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

func TestAutobootBytes(t *testing.T) {
	tests := []struct {
		in   Autoboot
		want string
	}{
		{Autoboot{Partition: 2, Tryboot: 3}, "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"},
		{Autoboot{TrybootAB: true, Partition: 3, Tryboot: 2}, "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"},
		{Autoboot{Partition: 2}, "[all]\ntryboot_a_b=1\nboot_partition=2\n"},
	}
	for _, tt := range tests {
		got := string(tt.in.Bytes())
		if got != tt.want {
			t.Errorf("%+v.Bytes() = %q, want %q", tt.in, got, tt.want)
		}
		back, err := ParseAutoboot([]byte(got))
		if want := (Autoboot{TrybootAB: true, Partition: tt.in.Partition, Tryboot: tt.in.Tryboot}); err != nil || back != want {
			t.Errorf("round trip of %q = %+v, %v; want %+v", got, back, err, want)
		}
	}
}

// TestAutobootFiles: every testdata/autoboot/ok-* file parses and every
// bad-* file is refused.
func TestAutobootFiles(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "autoboot", "*.txt"))
	if len(files) == 0 {
		t.Fatal("no testdata/autoboot files")
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseAutoboot(b)
		switch name := filepath.Base(p); {
		case strings.HasPrefix(name, "ok-") && err != nil:
			t.Errorf("%s: %v", name, err)
		case strings.HasPrefix(name, "bad-") && !errors.Is(err, ErrAutoboot):
			t.Errorf("%s: error = %v, want ErrAutoboot", name, err)
		}
	}
}

func FuzzParseAutoboot(f *testing.F) {
	f.Add([]byte("[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"))
	f.Add([]byte("[none]\nx\n[all]\nboot_partition=4\r\n"))
	seeds, _ := filepath.Glob(filepath.Join("testdata", "autoboot", "*.txt"))
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAutoboot(b)
		if err != nil {
			return
		}
		// Whatever parses writes back to the same settings.
		out := a.Bytes()
		if len(out) > MaxAutoboot {
			t.Fatalf("Bytes() is %d bytes", len(out))
		}
		back, err := ParseAutoboot(out)
		if err != nil {
			t.Fatalf("reparse %q: %v", out, err)
		}
		a.TrybootAB = true
		if back != a {
			t.Fatalf("round trip %+v -> %+v", a, back)
		}
	})
}
