package slots

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseFwEnvConfig(t *testing.T) {
	tests := []struct {
		name, in string
		want     []EnvCopy
		err      bool
	}{
		{"single", "# comment\n/boot/uboot.env 0x0000 0x4000\n", []EnvCopy{{Device: "/boot/uboot.env", Size: 0x4000}}, false},
		{"hex size without 0x", "/dev/mmcblk0 0x400000 4000 200 2\n", []EnvCopy{{Device: "/dev/mmcblk0", Offset: 0x400000, Size: 0x4000, SectorSize: 0x200, Sectors: 2}}, false},
		{"decimal offset", "/dev/mmcblk0 4194304 0x4000\n\n/dev/mmcblk0 4210688 0x4000\n", []EnvCopy{{Device: "/dev/mmcblk0", Offset: 4194304, Size: 0x4000}, {Device: "/dev/mmcblk0", Offset: 4210688, Size: 0x4000}}, false},
		{"short lines skipped", "/dev/mtd0 0\n/dev/mtd1 0 0x2000 0x20000\n", []EnvCopy{{Device: "/dev/mtd1", Size: 0x2000, SectorSize: 0x20000}}, false},
		{"empty", "# nothing\n", nil, true},
		{"three lines", "a 0 0x100\nb 0 0x100\nc 0 0x100\n", nil, true},
		{"sizes differ", "a 0 0x100\nb 0 0x200\n", nil, true},
		{"bad size", "a 0 0xZZ\n", nil, true},
		{"bad offset", "a x 0x100\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFwEnvConfig([]byte(tt.in))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err != nil {
				if !errors.Is(err, ErrEnvConfig) {
					t.Errorf("err = %v, want ErrEnvConfig", err)
				}
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("copy %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestEncodeEnvLayout(t *testing.T) {
	b, err := EncodeEnv(Env{"b": "2", "a": "x y"}, 32, true, 7)
	if err != nil {
		t.Fatal(err)
	}
	wantData := append([]byte("a=x y\x00b=2\x00\x00"), make([]byte, 32-5-11)...)
	if !bytes.Equal(b[5:], wantData) {
		t.Errorf("data = %q, want %q", b[5:], wantData)
	}
	if b[4] != 7 {
		t.Errorf("flags = %d, want 7", b[4])
	}
	if got, want := binary.LittleEndian.Uint32(b), crc32.ChecksumIEEE(wantData); got != want {
		t.Errorf("crc = %08x, want %08x", got, want)
	}
	env, fl, err := DecodeEnv(b, true)
	if err != nil || fl != 7 || env["a"] != "x y" || env["b"] != "2" || len(env) != 2 {
		t.Errorf("DecodeEnv = %v, %d, %v", env, fl, err)
	}
	single, _ := EncodeEnv(Env{"a": "1"}, 16, false, 0)
	if !bytes.Equal(single[4:], []byte("a=1\x00\x00\x00\x00\x00\x00\x00\x00\x00")) {
		t.Errorf("single data = %q", single[4:])
	}
}

func TestEncodeEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  Env
		size int
		err  error
	}{
		{"exact fit", Env{"ab": "cd"}, 4 + 6 + 1, nil},
		{"one over", Env{"ab": "cde"}, 4 + 6 + 1, ErrEnvTooLarge},
		{"oversized value", Env{"x": strings.Repeat("v", 0x4000)}, 0x4000, ErrEnvTooLarge},
		{"empty name", Env{"": "1"}, 64, ErrEnvVar},
		{"= in name", Env{"a=b": "1"}, 64, ErrEnvVar},
		{"NUL in value", Env{"a": "1\x002"}, 64, ErrEnvVar},
	}
	for _, tt := range tests {
		_, err := EncodeEnv(tt.env, tt.size, false, 0)
		if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
	}
}

func TestDecodeEnvCorrupt(t *testing.T) {
	b, _ := EncodeEnv(Env{"a": "1"}, 64, false, 0)
	b[10] ^= 0xff
	if _, _, err := DecodeEnv(b, false); !errors.Is(err, ErrNoValidEnv) {
		t.Errorf("bit flip: err = %v, want ErrNoValidEnv", err)
	}
	// CRC-valid but unterminated data.
	data := bytes.Repeat([]byte("x"), 60)
	raw := binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(data))
	raw = append(raw, data...)
	if _, _, err := DecodeEnv(raw, false); !errors.Is(err, ErrNoValidEnv) {
		t.Errorf("unterminated: err = %v, want ErrNoValidEnv", err)
	}
}

func TestLiveCopy(t *testing.T) {
	tests := []struct {
		valid [2]bool
		flags [2]byte
		want  int
	}{
		{[2]bool{true, false}, [2]byte{0, 9}, 0},
		{[2]bool{false, true}, [2]byte{9, 0}, 1},
		{[2]bool{false, false}, [2]byte{1, 2}, -1},
		{[2]bool{true, true}, [2]byte{1, 2}, 1},
		{[2]bool{true, true}, [2]byte{5, 4}, 0},
		{[2]bool{true, true}, [2]byte{3, 3}, 0},
		{[2]bool{true, true}, [2]byte{255, 0}, 1},
		{[2]bool{true, true}, [2]byte{0, 255}, 0},
		{[2]bool{true, true}, [2]byte{254, 255}, 1},
		{[2]bool{true, true}, [2]byte{1, 255}, 1},
	}
	for _, tt := range tests {
		if got := liveCopy(tt.valid, tt.flags); got != tt.want {
			t.Errorf("liveCopy(%v, %v) = %d, want %d", tt.valid, tt.flags, got, tt.want)
		}
	}
}

// envFiles makes env files and an fw_env.config; redundant gives two
// copies in one file at offsets 0 and size (as on a raw device).
func envFiles(t *testing.T, size int, redundant bool) (cfgPath, dev string) {
	t.Helper()
	dir := t.TempDir()
	dev = filepath.Join(dir, "env.img")
	n := size
	cfg := dev + " 0x0 0x" + strings.ToUpper(hexs(size)) + "\n"
	if redundant {
		n = 2 * size
		cfg += dev + " 0x" + hexs(size) + " 0x" + hexs(size) + "\n"
	}
	if err := os.WriteFile(dev, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, dev
}

func hexs(n int) string { return fmt.Sprintf("%x", n) }

func seedCopy(t *testing.T, dev string, off int64, env Env, size int, redundant bool, flags byte) {
	t.Helper()
	b, err := EncodeEnv(env, size, redundant, flags)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestEnvStoreBadInput(t *testing.T) {
	t.Run("one CRC bad", func(t *testing.T) {
		cfg, dev := envFiles(t, 0x1000, true)
		seedCopy(t, dev, 0, Env{"v": "old"}, 0x1000, true, 1)
		seedCopy(t, dev, 0x1000, Env{"v": "new"}, 0x1000, true, 2)
		corrupt(t, dev, 0x1000+100)
		s, _ := OpenEnvStore(cfg, "")
		env, err := s.Read()
		if err != nil || env["v"] != "old" {
			t.Fatalf("Read = %v, %v; want the intact copy (old)", env, err)
		}
		if err := s.Update(func(e Env) error { e["v"] = "newer"; return nil }); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(dev)
		if _, fl, err := DecodeEnv(b[0x1000:], true); err != nil || fl != 2 {
			t.Errorf("rewritten copy: flags %d, %v; want the bad copy rewritten with flags 2", fl, err)
		}
	})
	t.Run("both CRCs bad", func(t *testing.T) {
		cfg, dev := envFiles(t, 0x1000, true)
		seedCopy(t, dev, 0, Env{"v": "old"}, 0x1000, true, 1)
		seedCopy(t, dev, 0x1000, Env{"v": "new"}, 0x1000, true, 2)
		corrupt(t, dev, 100)
		corrupt(t, dev, 0x1000+100)
		before, _ := os.ReadFile(dev)
		s, _ := OpenEnvStore(cfg, "")
		if _, err := s.Read(); !errors.Is(err, ErrNoValidEnv) {
			t.Errorf("Read err = %v, want ErrNoValidEnv", err)
		}
		err := s.Update(func(e Env) error { e["v"] = "x"; return nil })
		if !errors.Is(err, ErrNoValidEnv) {
			t.Errorf("Update err = %v, want ErrNoValidEnv", err)
		}
		after, _ := os.ReadFile(dev)
		if !bytes.Equal(before, after) {
			t.Errorf("Update wrote to an env with no valid copy")
		}
	})
	t.Run("env size smaller in config than file", func(t *testing.T) {
		cfg, dev := envFiles(t, 0x2000, false)
		seedCopy(t, dev, 0, Env{"v": "1"}, 0x2000, false, 0)
		os.WriteFile(cfg, []byte(dev+" 0 0x1000\n"), 0o644)
		s, _ := OpenEnvStore(cfg, "")
		_, err := s.Read()
		if !errors.Is(err, ErrNoValidEnv) || !strings.Contains(err.Error(), "valid env of size 0x2000") {
			t.Errorf("Read err = %v, want ErrNoValidEnv naming size 0x2000", err)
		}
	})
	t.Run("env size larger in config than file", func(t *testing.T) {
		cfg, dev := envFiles(t, 0x1000, false)
		seedCopy(t, dev, 0, Env{"v": "1"}, 0x1000, false, 0)
		os.WriteFile(cfg, []byte(dev+" 0 0x4000\n"), 0o644)
		s, _ := OpenEnvStore(cfg, "")
		if _, err := s.Read(); !errors.Is(err, ErrEnvSize) {
			t.Errorf("Read err = %v, want ErrEnvSize", err)
		}
	})
	t.Run("missing device", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "fw_env.config")
		os.WriteFile(cfg, []byte("/nonexistent/env 0 0x4000\n"), 0o644)
		s, _ := OpenEnvStore(cfg, "")
		if _, err := s.Read(); !errors.Is(err, ErrEnvDevice) {
			t.Errorf("Read err = %v, want ErrEnvDevice", err)
		}
	})
	t.Run("missing config", func(t *testing.T) {
		if _, err := OpenEnvStore("/nonexistent/fw_env.config", ""); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v, want ErrNotExist", err)
		}
	})
	t.Run("oversized value", func(t *testing.T) {
		cfg, dev := envFiles(t, 0x1000, false)
		seedCopy(t, dev, 0, Env{"v": "1"}, 0x1000, false, 0)
		before, _ := os.ReadFile(dev)
		s, _ := OpenEnvStore(cfg, "")
		err := s.Update(func(e Env) error { e["big"] = strings.Repeat("x", 0x1000); return nil })
		if !errors.Is(err, ErrEnvTooLarge) {
			t.Errorf("Update err = %v, want ErrEnvTooLarge", err)
		}
		after, _ := os.ReadFile(dev)
		if !bytes.Equal(before, after) {
			t.Errorf("failed Update changed the env")
		}
	})
	t.Run("mirror needs one line", func(t *testing.T) {
		cfg, _ := envFiles(t, 0x1000, true)
		if _, err := OpenEnvStore(cfg, "/x"); !errors.Is(err, ErrEnvConfig) {
			t.Errorf("err = %v, want ErrEnvConfig", err)
		}
	})
}

func corrupt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0x5a
	f.WriteAt(b, off)
}

func TestMirrorStore(t *testing.T) {
	dir := t.TempDir()
	primary, redund := filepath.Join(dir, "uboot.env"), filepath.Join(dir, "uboot-redund.env")
	os.WriteFile(primary, make([]byte, 0x4000), 0o644)
	seedCopy(t, primary, 0, Env{"BOOT_ORDER": "A B"}, 0x4000, false, 0)
	s, err := NewEnvStore([]EnvCopy{{Device: primary, Size: 0x4000}}, redund)
	if err != nil {
		t.Fatal(err)
	}
	// The mirror file does not exist yet: the primary alone is enough.
	if err := s.Update(func(e Env) error { e["BOOT_A_LEFT"] = "3"; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{primary, redund} {
		b, _ := os.ReadFile(p)
		env, _, err := DecodeEnv(b, false)
		if err != nil || env["BOOT_A_LEFT"] != "3" || env["BOOT_ORDER"] != "A B" || len(b) != 0x4000 {
			t.Errorf("%s = %v, %v (%d bytes)", p, env, err, len(b))
		}
	}
	// Primary corrupt: the mirror is used, and a write repairs both.
	corrupt(t, primary, 50)
	env, err := s.Read()
	if err != nil || env["BOOT_A_LEFT"] != "3" {
		t.Fatalf("Read with bad primary = %v, %v", env, err)
	}
	if err := s.Update(func(e Env) error { e["BOOT_A_LEFT"] = "2"; return nil }); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(primary)
	if env, _, err := DecodeEnv(b, false); err != nil || env["BOOT_A_LEFT"] != "2" {
		t.Errorf("primary after repair = %v, %v", env, err)
	}
	if _, err := os.Stat(primary + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left behind")
	}
}
