package slots

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// tool finds an external program; without it the test is skipped, except
// under CI=true where it fails.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (Debian package %s)", name, pkg)
		}
		t.Skipf("%s not found (Debian package %s)", name, pkg)
	}
	return p
}

func run(t *testing.T, prog string, args ...string) string {
	t.Helper()
	out, err := exec.Command(prog, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// printenv returns fw_printenv's variables as a sorted "k=v" list.
func printenv(t *testing.T, cfg string) []string {
	t.Helper()
	out := run(t, tool(t, "fw_printenv", "libubootenv-tool"), "-c", cfg)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "=") {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}

func envLines(e Env) []string {
	var lines []string
	for k, v := range e {
		lines = append(lines, k+"="+v)
	}
	sort.Strings(lines)
	return lines
}

func readFlags(t *testing.T, dev string, size int) [2]byte {
	t.Helper()
	b, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	return [2]byte{b[4], b[size+4]}
}

func TestInteropFwTools(t *testing.T) {
	setenv := tool(t, "fw_setenv", "libubootenv-tool")
	for _, redundant := range []bool{false, true} {
		name := map[bool]string{false: "single", true: "redundant"}[redundant]
		t.Run(name, func(t *testing.T) {
			const size = 0x4000
			cfg, dev := envFiles(t, size, redundant)
			seedCopy(t, dev, 0, Env{"bootdelay": "0", "BOOT_ORDER": "A B"}, size, redundant, 0)
			s, err := OpenEnvStore(cfg, "")
			if err != nil {
				t.Fatal(err)
			}
			want := Env{"bootdelay": "0", "BOOT_ORDER": "A B"}
			flags := byte(0)
			live := 0
			// Alternate writers; after each write both readers agree and,
			// when redundant, the flags count up in the other copy.
			for i := range 6 {
				val := strings.Repeat("v", i+1) + " with spaces"
				key := "k" + string(rune('0'+i%3))
				if i%2 == 0 {
					err := s.Update(func(e Env) error { e[key] = val; return nil })
					if err != nil {
						t.Fatalf("step %d: Update: %v", i, err)
					}
				} else {
					run(t, setenv, "-c", cfg, key, val)
				}
				want[key] = val
				got := printenv(t, cfg)
				if strings.Join(got, "\n") != strings.Join(envLines(want), "\n") {
					t.Errorf("step %d: fw_printenv = %q, want %q", i, got, envLines(want))
				}
				env, err := s.Read()
				if err != nil {
					t.Fatalf("step %d: Read: %v", i, err)
				}
				if strings.Join(envLines(env), "\n") != strings.Join(envLines(want), "\n") {
					t.Errorf("step %d: Read = %q, want %q", i, envLines(env), envLines(want))
				}
				if redundant {
					flags++
					live = 1 - live
					fl := readFlags(t, dev, size)
					if fl[live] != flags || fl[1-live] != flags-1 {
						t.Errorf("step %d: flags = %v, want %d in copy %d and %d in the other", i, fl, flags, live, flags-1)
					}
				}
			}
			// Deleting with fw_setenv (no value) is seen by us.
			run(t, setenv, "-c", cfg, "k0")
			env, _ := s.Read()
			if _, ok := env["k0"]; ok {
				t.Errorf("k0 still present after fw_setenv deleted it")
			}
		})
	}
}

// TestInteropFlagsWrap crosses the 255 → 0 wrap of the flags byte with
// both writers.
func TestInteropFlagsWrap(t *testing.T) {
	setenv := tool(t, "fw_setenv", "libubootenv-tool")
	const size = 0x1000
	cfg, dev := envFiles(t, size, true)
	seedCopy(t, dev, 0, Env{"n": "0"}, size, true, 253)
	seedCopy(t, dev, size, Env{"n": "-1"}, size, true, 252)
	s, _ := OpenEnvStore(cfg, "")
	steps := []struct {
		ours  bool
		flags [2]byte // after the step
	}{
		{true, [2]byte{253, 254}},
		{false, [2]byte{255, 254}},
		{true, [2]byte{255, 0}},
		{false, [2]byte{1, 0}},
		{true, [2]byte{1, 2}},
	}
	for i, st := range steps {
		val := string(rune('1' + i))
		if st.ours {
			if err := s.Update(func(e Env) error { e["n"] = val; return nil }); err != nil {
				t.Fatal(err)
			}
		} else {
			run(t, setenv, "-c", cfg, "n", val)
		}
		if got := readFlags(t, dev, size); got != st.flags {
			t.Errorf("step %d: flags = %v, want %v", i, got, st.flags)
		}
		if got := printenv(t, cfg); len(got) != 1 || got[0] != "n="+val {
			t.Errorf("step %d: fw_printenv = %q, want n=%s", i, got, val)
		}
		if env, err := s.Read(); err != nil || env["n"] != val {
			t.Errorf("step %d: Read = %v, %v; want n=%s", i, env, err, val)
		}
	}
}

// TestInteropMkenvimage reads images built by u-boot-tools' mkenvimage, the
// way boards are provisioned.
func TestInteropMkenvimage(t *testing.T) {
	mk := tool(t, "mkenvimage", "u-boot-tools")
	dir := t.TempDir()
	txt := filepath.Join(dir, "env.txt")
	os.WriteFile(txt, []byte("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\nbootcmd=run distro_bootcmd\n"), 0o644)
	for _, redundant := range []bool{false, true} {
		img := filepath.Join(dir, "env.img")
		args := []string{"-s", "0x4000", "-o", img, txt}
		if redundant {
			args = append([]string{"-r"}, args...)
		}
		run(t, mk, args...)
		b, _ := os.ReadFile(img)
		env, _, err := DecodeEnv(b, redundant)
		if err != nil || env["BOOT_ORDER"] != "A B" || env["bootcmd"] != "run distro_bootcmd" || len(env) != 4 {
			t.Errorf("redundant=%v: DecodeEnv(mkenvimage) = %v, %v", redundant, env, err)
		}
	}
}

// TestInteropMirror checks both files of the mirror layout with
// fw_printenv, each as a single env.
func TestInteropMirror(t *testing.T) {
	tool(t, "fw_printenv", "libubootenv-tool")
	dir := t.TempDir()
	primary, redund := filepath.Join(dir, "uboot.env"), filepath.Join(dir, "uboot-redund.env")
	os.WriteFile(primary, make([]byte, 0x4000), 0o644)
	seedCopy(t, primary, 0, Env{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}, 0x4000, false, 0)
	cfg := filepath.Join(dir, "fw_env.config")
	os.WriteFile(cfg, []byte(primary+" 0x0000 0x4000\n"), 0o644)
	cfg2 := filepath.Join(dir, "fw_env-redund.config")
	os.WriteFile(cfg2, []byte(redund+" 0x0000 0x4000\n"), 0o644)
	u := &UBoot{Store: mustStore(t, cfg, redund), scheme: SchemeRAUC, tries: 3, names: []string{"A", "B"}}
	if err := u.Try("B"); err != nil {
		t.Fatal(err)
	}
	want := []string{"BOOT_A_LEFT=3", "BOOT_B_LEFT=1", "BOOT_ORDER=B A"}
	for _, c := range []string{cfg, cfg2} {
		if got := printenv(t, c); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("fw_printenv -c %s = %q, want %q", filepath.Base(c), got, want)
		}
	}
}

func mustStore(t *testing.T, cfg, mirror string) *EnvStore {
	t.Helper()
	s, err := OpenEnvStore(cfg, mirror)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
