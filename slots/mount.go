package slots

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrMounted means the slot's device is mounted and must not be written.
var ErrMounted = errors.New("slots: slot device is mounted")

// Mount is one line of /proc/self/mountinfo, the fields slots needs.
type Mount struct {
	Major, Minor uint32 // st_dev of the mounted filesystem
	MountPoint   string
	Source       string // mount source after " - fstype ", e.g. /dev/mmcblk0p2
}

// ParseMountinfo parses the mountinfo format (proc(5)); octal escapes such
// as \040 are decoded. Malformed lines are errors naming the line.
func ParseMountinfo(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var ms []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		fields := strings.Fields(line)
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			return nil, fmt.Errorf("read mountinfo %s:%d: malformed line", path, n)
		}
		maj, min, ok := strings.Cut(fields[2], ":")
		a, errA := strconv.ParseUint(maj, 10, 32)
		b, errB := strconv.ParseUint(min, 10, 32)
		if !ok || errA != nil || errB != nil {
			return nil, fmt.Errorf("read mountinfo %s:%d: bad major:minor %q", path, n, fields[2])
		}
		ms = append(ms, Mount{
			Major: uint32(a), Minor: uint32(b),
			MountPoint: unescapeMount(fields[4]),
			Source:     unescapeMount(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return ms, nil
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkNotMounted returns ErrMounted if device (block device or file) is
// the source of a mount, a block device whose number is a mounted st_dev,
// or a file backing a loop device (sys/block/loop*/loop/backing_file)
// that is mounted.
func checkNotMounted(device, mountinfo, sys string) error {
	ms, err := ParseMountinfo(mountinfo)
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(device)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			real = device
		} else {
			return fmt.Errorf("resolve %s: %w", device, err)
		}
	}
	dev, isBlock := blockDevNum(real)
	loops := loopsBackedBy(sys, real)
	for _, m := range ms {
		for _, l := range loops {
			if m.Major == l.major && m.Minor == l.minor {
				return fmt.Errorf("%w: %s backs a loop device mounted on %s", ErrMounted, device, m.MountPoint)
			}
		}
		if isBlock && m.Major == dev.major && m.Minor == dev.minor {
			return fmt.Errorf("%w: %s is mounted on %s", ErrMounted, device, m.MountPoint)
		}
		if m.Source == device || m.Source == real {
			return fmt.Errorf("%w: %s is mounted on %s", ErrMounted, device, m.MountPoint)
		}
		if strings.HasPrefix(m.Source, "/") {
			if r, err := filepath.EvalSymlinks(m.Source); err == nil && r == real {
				return fmt.Errorf("%w: %s is mounted on %s", ErrMounted, device, m.MountPoint)
			}
		}
	}
	return nil
}

type devNum struct{ major, minor uint32 }

// loopsBackedBy returns the device numbers of the loop devices whose
// backing file is path, from sys (normally /sys).
func loopsBackedBy(sys, path string) []devNum {
	if sys == "" {
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join(sys, "block", "loop*"))
	var out []devNum
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "loop", "backing_file"))
		if err != nil || strings.TrimSpace(string(b)) != path {
			continue
		}
		n, err := os.ReadFile(filepath.Join(d, "dev"))
		if err != nil {
			continue
		}
		maj, min, ok := strings.Cut(strings.TrimSpace(string(n)), ":")
		a, errA := strconv.ParseUint(maj, 10, 32)
		c, errC := strconv.ParseUint(min, 10, 32)
		if ok && errA == nil && errC == nil {
			out = append(out, devNum{uint32(a), uint32(c)})
		}
	}
	return out
}
