//go:build linux

package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openPTY returns the master side of a new pseudo-terminal and the path of
// its slave, which go.bug.st/serial opens like a UART.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	var unlock int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlock pty: %v", e)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { master.Close() })
	// Raw master side too, so nothing is echoed or translated.
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err == nil {
		tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		tio.Oflag &^= unix.OPOST
		tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, tio)
	}
	return master, fmt.Sprintf("/dev/pts/%d", n)
}

func TestSerialFraming(t *testing.T) {
	master, slave := openPTY(t)
	port, err := OpenSerial(slave, 115200)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	laptop := NewFramer(master)
	device := NewFramer(port)

	big := bytes.Repeat([]byte("chunk-bytes "), 6000) // 72 KB: larger than a pty buffer
	msgs := []Message{
		&Get{Offer: "recovery", Manifest: true, Window: 1},
		&Data{Offer: "recovery", Comp: 1, Index: 2, Bytes: big},
		&Cmd{ID: "c", Op: CmdReboot},
	}
	noise := [][]byte{[]byte("login: \r\n"), {'A', 'P', 9, 0, 0, 0, 1, 0, 0}, {'A', 'P', 4, 0, 0, 0, 3, 0xff, 0xff, 1, 2, 3, 0, 0, 0, 0}, {}}

	// laptop → device, with console noise and corrupt frames between messages.
	errc := make(chan error, 1)
	go func() {
		for i, m := range msgs {
			if _, err := master.Write(noise[i]); err != nil {
				errc <- err
				return
			}
			if err := laptop.Send(m); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, want := range msgs {
		got, err := device.Recv()
		if err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		want = versioned(want) // a copy: the sender may still read want
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Recv %d = %#v, want %#v", i, got, want)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := device.Dropped.Load(); got < 3 {
		t.Errorf("Dropped = %d, want at least 3 (noise and two bad frames)", got)
	}

	// device → laptop.
	st := &Status{State: "idle", Result: "success"}
	if err := device.Send(st); err != nil {
		t.Fatal(err)
	}
	got, err := laptop.Recv()
	if err != nil {
		t.Fatal(err)
	}
	st.V = Version
	if !reflect.DeepEqual(got, Message(st)) {
		t.Errorf("laptop got %#v, want %#v", got, st)
	}
}

// A flipped bit anywhere in a frame drops that frame only.
func TestFrameCorruption(t *testing.T) {
	var buf bytes.Buffer
	f := NewFramer(&buf)
	if err := f.Send(&Cmd{ID: "a", Op: CmdCancel}); err != nil {
		t.Fatal(err)
	}
	frame := bytes.Clone(buf.Bytes())
	for i := 2; i < len(frame); i++ {
		var in bytes.Buffer
		bad := bytes.Clone(frame)
		bad[i] ^= 0x10
		in.Write(bad)
		in.Write(frame)
		r := NewFramer(&in)
		m, err := r.Recv()
		if err != nil {
			t.Fatalf("byte %d: Recv: %v", i, err)
		}
		if m.(*Cmd).ID != "a" {
			t.Errorf("byte %d: got %#v", i, m)
		}
		if _, err := r.Recv(); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("byte %d: second Recv = %v, want EOF", i, err)
		}
	}
}

func FuzzFrameRecv(f *testing.F) {
	var buf bytes.Buffer
	w := NewFramer(&buf)
	w.Send(&Data{Offer: "o", Bytes: []byte("x")})
	w.Send(&Hello{Device: "d"})
	f.Add(buf.Bytes())
	f.Add([]byte("APAPAP\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewFramer(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(b), io.Discard})
		for i := 0; i < 100; i++ {
			if _, err := r.Recv(); err != nil {
				return
			}
		}
	})
}
