package slots

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

func TestWriteInactive(t *testing.T) {
	for _, size := range []int{0, 1, writeBuf - 1, writeBuf, 2*writeBuf + 17} {
		c := fakeBoard(t, "autopatcher.slot=A")
		c.Classes["rootfs"].B.Size = Size(3 * writeBuf)
		v := true
		c.Classes["rootfs"].B.Verify = &v
		data := randBytes(size, uint64(size))
		sum := sha256.Sum256(data)
		s, _ := c.Inactive("rootfs")
		if err := c.Write(context.Background(), s, bytes.NewReader(data), int64(size), sum[:]); err != nil {
			t.Fatalf("size %d: Write: %v", size, err)
		}
		got, _ := os.ReadFile(s.Device)
		if !bytes.Equal(got, data) {
			t.Errorf("size %d: slot holds %d bytes, not the input", size, len(got))
		}
		// Unknown size: stream to EOF.
		if err := c.Write(context.Background(), s, bytes.NewReader(data), -1, sum[:]); err != nil {
			t.Fatalf("size %d, unknown: Write: %v", size, err)
		}
	}
}

func TestWriteRefusals(t *testing.T) {
	c := fakeBoard(t, "autopatcher.slot=A")
	cl := c.Classes["rootfs"]
	data := randBytes(4096, 1)
	sum := sha256.Sum256(data)
	ctx := context.Background()

	if err := c.Write(ctx, cl.A, bytes.NewReader(data), 4096, sum[:]); !errors.Is(err, ErrBootedSlot) {
		t.Errorf("write booted slot: err = %v, want ErrBootedSlot", err)
	}
	big := randBytes(int(cl.B.Size)+1, 2)
	if err := c.Write(ctx, cl.B, bytes.NewReader(big), int64(len(big)), nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: err = %v, want ErrTooLarge", err)
	}
	if err := c.Write(ctx, cl.B, bytes.NewReader(big), -1, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize stream: err = %v, want ErrTooLarge", err)
	}
	if err := c.Write(ctx, cl.B, bytes.NewReader(data[:100]), 4096, nil); !errors.Is(err, ErrShortInput) {
		t.Errorf("short input: err = %v, want ErrShortInput", err)
	}
	bad := sha256.Sum256([]byte("other"))
	if err := c.Write(ctx, cl.B, bytes.NewReader(data), 4096, bad[:]); !errors.Is(err, ErrDigest) {
		t.Errorf("wrong digest: err = %v, want ErrDigest", err)
	}
	v := true
	cl.B.Verify = &v
	if err := c.Write(ctx, cl.B, bytes.NewReader(data), 4096, bad[:]); !errors.Is(err, ErrVerify) {
		t.Errorf("wrong digest with read-back: err = %v, want ErrVerify", err)
	}
	tgt, err := c.OpenTarget(cl.B)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.WriteAt([]byte{1, 2}, int64(cl.B.Size)-1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("WriteAt past end: err = %v, want ErrTooLarge", err)
	}
	tgt.Close()

	// The command line names A but root= is B's device: refuse B.
	os.WriteFile(c.Paths.Cmdline, []byte("autopatcher.slot=A root=PARTUUID=1234abcd-03"), 0o600)
	if err := c.Write(ctx, cl.B, bytes.NewReader(data), 4096, nil); !errors.Is(err, ErrBootedSlot) {
		t.Errorf("root= is the target: err = %v, want ErrBootedSlot", err)
	}
	// Unknown booted slot: refuse everything.
	os.WriteFile(c.Paths.Cmdline, []byte("quiet"), 0o600)
	if err := c.Write(ctx, cl.B, bytes.NewReader(data), 4096, nil); !errors.Is(err, ErrUnknownBooted) {
		t.Errorf("unknown booted: err = %v, want ErrUnknownBooted", err)
	}
	if _, err := OpenTarget(&Slot{Type: TypeDir, Device: "/x"}, TargetOptions{Booted: "A"}); !errors.Is(err, ErrDirSlot) {
		t.Errorf("dir slot: err = %v, want ErrDirSlot", err)
	}
}

func TestWriteRefusesMounted(t *testing.T) {
	c := fakeBoard(t, "autopatcher.slot=A")
	b := c.Classes["rootfs"].B
	lines := []struct{ name, line string }{
		{"source path", "36 35 98:0 / /mnt rw - ext4 " + b.Device + " rw\n"},
		{"escaped", "36 35 98:0 / /mnt\\040x rw shared:1 - ext4 " + b.Device + " rw\n"},
		{"link source", "36 35 98:0 / /mnt rw - ext4 " + filepath.Join(c.Paths.DevDisk, "by-partuuid/1234abcd-03") + " rw\n"},
	}
	for _, l := range lines {
		os.WriteFile(c.Paths.Mountinfo, []byte("22 1 0:21 / /proc rw - proc proc rw\n"+l.line), 0o600)
		_, err := c.OpenTarget(b)
		if !errors.Is(err, ErrMounted) {
			t.Errorf("%s: OpenTarget err = %v, want ErrMounted", l.name, err)
		}
	}
	// A loop device backed by the slot file, mounted.
	sys := t.TempDir()
	loop := filepath.Join(sys, "block", "loop3")
	os.MkdirAll(filepath.Join(loop, "loop"), 0o755)
	os.WriteFile(filepath.Join(loop, "loop", "backing_file"), []byte(b.Device+"\n"), 0o644)
	os.WriteFile(filepath.Join(loop, "dev"), []byte("7:3\n"), 0o644)
	c.Paths.Sys = sys
	os.WriteFile(c.Paths.Mountinfo, []byte("40 1 7:3 / /mnt/img rw - ext4 /dev/loop3 rw\n"), 0o600)
	if _, err := c.OpenTarget(b); !errors.Is(err, ErrMounted) {
		t.Errorf("loop-mounted file: OpenTarget err = %v, want ErrMounted", err)
	}
	os.WriteFile(c.Paths.Mountinfo, []byte("40 1 7:4 / /mnt/img rw - ext4 /dev/loop4 rw\n"), 0o600)
	if tgt, err := c.OpenTarget(b); err != nil {
		t.Errorf("other loop mounted: OpenTarget err = %v, want nil", err)
	} else {
		tgt.Close()
	}
	os.WriteFile(c.Paths.Mountinfo, []byte("garbage\n"), 0o600)
	if _, err := c.OpenTarget(b); err == nil {
		t.Errorf("malformed mountinfo: OpenTarget succeeded, want an error")
	}
}

func TestMountedBlockDevice(t *testing.T) {
	// The root filesystem's device number, as the kernel reports it.
	ms, err := ParseMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Skip("no /proc/self/mountinfo")
	}
	for _, m := range ms {
		if m.MountPoint != "/" || !filepath.IsAbs(m.Source) {
			continue
		}
		if _, ok := blockDevNum(m.Source); !ok {
			continue
		}
		err := checkNotMounted(m.Source, "/proc/self/mountinfo", "/sys")
		if !errors.Is(err, ErrMounted) {
			t.Errorf("checkNotMounted(%s) = %v, want ErrMounted", m.Source, err)
		}
		return
	}
	t.Skip("root is not on a block device node here")
}

// flipFile corrupts what the device returns on read-back.
func TestVerifyDetectsMismatch(t *testing.T) {
	c := fakeBoard(t, "autopatcher.slot=A")
	b := c.Classes["rootfs"].B
	data := randBytes(100000, 3)
	sum := sha256.Sum256(data)
	tgt, err := c.OpenTarget(b)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	// Out-of-order chunk writes, as the MQTT transport does.
	for _, off := range []int{65536, 98304, 0, 32768} {
		end := min(off+32768, len(data))
		if _, err := tgt.WriteAt(data[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tgt.Verify(int64(len(data)), sum[:]); err != nil {
		t.Fatalf("Verify after good write: %v", err)
	}
	// A bit flip behind the writer's back (as a bad device would).
	f, _ := os.OpenFile(b.Device, os.O_RDWR, 0)
	f.WriteAt([]byte{data[5000] ^ 1}, 5000)
	f.Close()
	if err := tgt.Verify(int64(len(data)), sum[:]); !errors.Is(err, ErrVerify) {
		t.Errorf("Verify after corruption: err = %v, want ErrVerify", err)
	}
	buf := make([]byte, 10)
	if n, err := tgt.ReadAt(buf, 0); n != 10 || err != nil || !bytes.Equal(buf, data[:10]) {
		t.Errorf("ReadAt = %d, %v", n, err)
	}
}

func TestWriteCancel(t *testing.T) {
	c := fakeBoard(t, "autopatcher.slot=A")
	b := c.Classes["rootfs"].B
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := c.Write(ctx, b, io.LimitReader(zeroReader{}, 4096), 4096, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Write with cancelled ctx: err = %v, want context.Canceled", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestWriteReadbackMismatch flips one byte on its way to the device, in
// a window read back while writing and in the tail read back at the end.
func TestWriteReadbackMismatch(t *testing.T) {
	old := writebackWin
	writebackWin = writeBuf
	defer func() { writebackWin = old }()
	const size = 3*writeBuf + 1000
	data := randBytes(size, 9)
	sum := sha256.Sum256(data)
	for _, at := range []int64{-1, 10, writeBuf + 7, 2*writeBuf + 5, size - 1} {
		c := fakeBoard(t, "autopatcher.slot=A")
		b := c.Classes["rootfs"].B
		b.Size = 4 * writeBuf
		v := true
		b.Verify = &v
		tgt, err := c.OpenTarget(b)
		if err != nil {
			t.Fatal(err)
		}
		tgt.mangle = func(p []byte, off int64) []byte {
			if at >= off && at < off+int64(len(p)) {
				p[at-off] ^= 0x10
			}
			return p
		}
		err = tgt.Write(context.Background(), bytes.NewReader(data), size, sum[:])
		tgt.Close()
		if at < 0 {
			if err != nil {
				t.Errorf("no flip: Write = %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrVerify) {
			t.Errorf("flip at %d: Write err = %v, want ErrVerify", at, err)
		}
	}
}
