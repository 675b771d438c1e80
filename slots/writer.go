package slots

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
)

// Writer errors.
var (
	ErrBootedSlot = errors.New("slots: refusing to write the booted slot")
	ErrTooLarge   = errors.New("slots: data larger than the slot")
	ErrShortInput = errors.New("slots: input shorter than its declared size")
	ErrDigest     = errors.New("slots: sha256 of the input does not match")
	ErrVerify     = errors.New("slots: read-back sha256 does not match")
	ErrDirSlot    = errors.New("slots: directory slots are not written as images")
)

// Buffer sizes of the streaming writer and the read-back check.
const (
	writeBuf  = 4 << 20 // bytes per write(2), a multiple of every erase/page size
	writeBufs = 4       // buffers in flight: one reading, one writing+hashing, spares
)

// writebackWin: writeback starts, and read-back follows, every this many
// bytes (a variable so tests can make windows small).
var writebackWin int64 = 32 << 20

// TargetOptions says what OpenTarget must refuse.
type TargetOptions struct {
	Booted    string // boot name of the running slot; "" refuses every slot
	Mountinfo string // default /proc/self/mountinfo
	Sys       string // sysfs, for loop devices; default /sys
}

// Target is an open inactive slot. It never touches bootloader state.
// WriteAt, ReadAt and Sync may be called from several goroutines.
type Target struct {
	slot   *Slot
	f      *os.File
	size   int64
	verify bool
	// mangle, if set, changes data on its way to the device (tests
	// simulate a device that stores something else).
	mangle func(p []byte, off int64) []byte

	direct   *os.File // O_DIRECT read handle for read-back, opened lazily
	noDirect bool     // O_DIRECT not supported here

	directW   *os.File // O_DIRECT write handle for Write, opened lazily
	noDirectW bool     // O_DIRECT writes not supported here
	scratch   []byte   // aligned copy for mangle on the direct path
}

// OpenTarget opens the slot for writing after checking, from
// Paths.Cmdline and Paths.Mountinfo, that it is not booted or mounted. As
// a second guard against a config that disagrees with the command line,
// a slot whose device is the root= device is refused too.
func (c *Config) OpenTarget(s *Slot) (*Target, error) {
	b, err := os.ReadFile(c.Paths.Cmdline)
	if err != nil {
		return nil, fmt.Errorf("open slot %s/%s: %w: read cmdline: %v", s.Class, s.BootName, ErrUnknownBooted, err)
	}
	booted, err := c.Booted(string(b))
	if err != nil {
		return nil, fmt.Errorf("open slot %s/%s: %w", s.Class, s.BootName, err)
	}
	if root := ParseCmdline(string(b))[ParamRoot]; root != "" && s.Type != TypeDir {
		if dev, err := c.resolveRoot(root); err == nil && sameDevice(dev, s.Device) {
			return nil, fmt.Errorf("open slot %s/%s: %w: %s is root=%s", s.Class, s.BootName, ErrBootedSlot, s.Device, root)
		}
	}
	return OpenTarget(s, TargetOptions{Booted: booted, Mountinfo: c.Paths.Mountinfo, Sys: c.Paths.Sys})
}

// OpenTarget opens slot s for writing. It refuses the booted slot, a
// mounted device, directory slots, and a configured size larger than the
// device. Block devices are opened O_EXCL, which the kernel refuses while
// they are mounted; a file slot is created if missing.
func OpenTarget(s *Slot, o TargetOptions) (*Target, error) {
	name := s.Class + "/" + s.BootName
	if s.Type == TypeDir {
		return nil, fmt.Errorf("open slot %s: %w", name, ErrDirSlot)
	}
	if o.Booted == "" {
		return nil, fmt.Errorf("open slot %s: %w", name, ErrUnknownBooted)
	}
	if s.BootName == o.Booted {
		return nil, fmt.Errorf("open slot %s: %w (%s)", name, ErrBootedSlot, s.Device)
	}
	mi := o.Mountinfo
	if mi == "" {
		mi = DefaultMountinfo
	}
	sys := o.Sys
	if sys == "" {
		sys = DefaultSys
	}
	if err := checkNotMounted(s.Device, mi, sys); err != nil {
		return nil, fmt.Errorf("open slot %s: %w", name, err)
	}
	flags := os.O_RDWR
	if s.Type == TypeFile {
		flags |= os.O_CREATE
	} else {
		flags |= openExclusive
	}
	f, err := os.OpenFile(s.Device, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open slot %s: %w", name, err)
	}
	size := int64(s.Size)
	if s.Type == TypeBlock {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("open slot %s: size of %s: %w", name, s.Device, err)
		}
		if size == 0 {
			size = end
		} else if size > end {
			f.Close()
			return nil, fmt.Errorf("open slot %s: configured size %d larger than %s (%d bytes)", name, size, s.Device, end)
		}
	}
	verify := s.Type == TypeBlock // default: read back block devices only
	if s.Verify != nil {
		verify = *s.Verify
	}
	return &Target{slot: s, f: f, size: size, verify: verify}, nil
}

// WriteAt writes p at off; it refuses to write past the slot size.
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > t.size {
		return 0, fmt.Errorf("write slot %s/%s at %d+%d: %w (%d bytes)", t.slot.Class, t.slot.BootName, off, len(p), ErrTooLarge, t.size)
	}
	if t.mangle != nil {
		p = t.mangle(slices.Clone(p), off)
	}
	n, err := t.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("write slot %s/%s: %w", t.slot.Class, t.slot.BootName, err)
	}
	return n, nil
}

// ReadAt reads back what was written (used to re-check chunks).
func (t *Target) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > t.size {
		return 0, fmt.Errorf("read slot %s/%s at %d: %w", t.slot.Class, t.slot.BootName, off, ErrTooLarge)
	}
	if rest := t.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	return t.f.ReadAt(p, off)
}

// Sync flushes everything written to the device.
func (t *Target) Sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("sync slot %s/%s: %w", t.slot.Class, t.slot.BootName, err)
	}
	return nil
}

// Close closes the device without syncing.
func (t *Target) Close() error {
	if t.direct != nil {
		t.direct.Close()
	}
	if t.directW != nil {
		t.directW.Close()
	}
	return t.f.Close()
}

// writer returns the O_DIRECT write handle of the device, or nil where the
// filesystem has no O_DIRECT (tmpfs on older kernels).
func (t *Target) writer() *os.File {
	if t.directW == nil && !t.noDirectW {
		f, err := openDirectWrite(t.slot.Device)
		if err != nil {
			t.noDirectW = true
		} else {
			t.directW = f
		}
	}
	return t.directW
}

// writeBlock writes b at off: whole aligned blocks through dw (O_DIRECT:
// no copy into the page cache, no writeback left for fsync, on the device
// when it returns), anything else through the buffered handle. It reports
// whether the write went direct.
func (t *Target) writeBlock(dw *os.File, p []byte, off int64) (bool, error) {
	if dw == nil || off%directAlign != 0 || len(p)%directAlign != 0 || len(p) == 0 {
		_, err := t.WriteAt(p, off)
		return false, err
	}
	if off+int64(len(p)) > t.size {
		return false, fmt.Errorf("write slot %s/%s at %d+%d: %w (%d bytes)", t.slot.Class, t.slot.BootName, off, len(p), ErrTooLarge, t.size)
	}
	if t.mangle != nil {
		if len(t.scratch) < len(p) {
			t.scratch, _ = alignedBuf(writeBuf)
		}
		q := t.scratch[:len(p)]
		copy(q, p)
		p = t.mangle(q, off)
	}
	if _, err := dw.WriteAt(p, off); err != nil {
		return true, fmt.Errorf("write slot %s/%s: %w", t.slot.Class, t.slot.BootName, err)
	}
	return true, nil
}

// reader returns the file read-back reads from: the device opened again
// with O_DIRECT when the filesystem allows it (reads then bypass the page
// cache by construction), else the write handle.
func (t *Target) reader() (*os.File, bool) {
	if t.direct == nil && !t.noDirect {
		f, err := openDirect(t.slot.Device)
		if err != nil {
			t.noDirect = true
		} else {
			t.direct = f
		}
	}
	if t.direct != nil {
		return t.direct, true
	}
	return t.f, false
}

// Verify syncs and reads the first n bytes back from the device (O_DIRECT,
// or after dropping the cached pages), comparing their sha256 with sum
// (ErrVerify on mismatch).
func (t *Target) Verify(n int64, sum []byte) error {
	return t.verifyFrom(sha256.New(), 0, n, sum)
}

// verifyFrom finishes a read-back whose first from bytes are already in h.
func (t *Target) verifyFrom(h hash.Hash, from, n int64, sum []byte) error {
	if n < 0 || n > t.size || from > n {
		return fmt.Errorf("verify slot %s/%s: %w", t.slot.Class, t.slot.BootName, ErrTooLarge)
	}
	if err := t.Sync(); err != nil {
		return err
	}
	dropCache(t.f, from, n-from)
	rf, direct := t.reader()
	if err := hashRange(h, rf, direct, from, n); err != nil {
		return fmt.Errorf("verify slot %s/%s: %w", t.slot.Class, t.slot.BootName, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, sum) {
		return fmt.Errorf("verify slot %s/%s: %w: read %x, want %x", t.slot.Class, t.slot.BootName, ErrVerify, got, sum)
	}
	return nil
}

// Finish ends a write of n bytes: a file slot is truncated to n, all data
// is synced, and when read-back is on for the slot and sum is set, the
// first n bytes are read back and checked.
func (t *Target) Finish(n int64, sum []byte) error {
	return t.finish(n, sum, sha256.New(), 0)
}

func (t *Target) finish(n int64, sum []byte, h hash.Hash, verified int64) error {
	if t.slot.Type == TypeFile {
		if err := t.f.Truncate(n); err != nil {
			return fmt.Errorf("finish slot %s/%s: %w", t.slot.Class, t.slot.BootName, err)
		}
	}
	if t.verify && sum != nil {
		return t.verifyFrom(h, verified, n, sum)
	}
	return t.Sync()
}

// Write streams r into the slot from offset 0 and finishes it (see
// Finish). size is the number of bytes r yields (-1: until EOF, bounded by
// the slot size). With read-back on and sum set, each 32 MiB window is read
// back from the device as soon as its writeback has finished, while later
// windows are still written, and the read-back sha256 must equal sum
// (ErrVerify). Otherwise the stream is hashed alongside the writes and
// must equal sum if set (ErrDigest).
func (t *Target) Write(ctx context.Context, r io.Reader, size int64, sum []byte) error {
	if size > t.size {
		return fmt.Errorf("write slot %s/%s: %d bytes: %w (%d bytes)", t.slot.Class, t.slot.BootName, size, ErrTooLarge, t.size)
	}
	var rb *readback
	if t.verify && sum != nil {
		rb = newReadback(t)
	}
	// With read-back on, the read-back sha256 is the one check that
	// matters (a bad input fails it too), so the stream is not hashed:
	// one sha256 pass instead of two.
	n, got, err := t.stream(ctx, r, size, rb)
	var verified int64
	h := sha256.New()
	if rb != nil {
		var rerr error
		h, verified, rerr = rb.wait()
		if err == nil && rerr != nil {
			err = fmt.Errorf("verify: %w", rerr)
		}
	}
	if err != nil {
		return fmt.Errorf("write slot %s/%s: %w", t.slot.Class, t.slot.BootName, err)
	}
	if rb == nil && sum != nil && !bytes.Equal(got, sum) {
		return fmt.Errorf("write slot %s/%s: %w: got %x, want %x", t.slot.Class, t.slot.BootName, ErrDigest, got, sum)
	}
	return t.finish(n, sum, h, verified)
}

// readback reads written windows back from the device in order into one
// running sha256: one goroutine reads (after waiting for the writeback of
// a buffered window and dropping its cached pages; a window written with
// O_DIRECT is on the device already), another hashes, readBufs blocks in
// flight between them. Both live for the whole write, so a window costs a
// channel send, not a goroutine or a buffer.
type readback struct {
	t       *Target
	h       hash.Hash
	done    int64 // bytes read back and hashed so far
	windows chan window
	errc    chan error
	release []func()
}

// window is a written range; buffered means written through the page cache.
type window struct {
	off, n   int64
	buffered bool
}

// readBufs is how many writeBuf buffers the read-back has in flight.
const readBufs = 3

func newReadback(t *Target) *readback {
	rb := &readback{t: t, h: sha256.New(), windows: make(chan window, 1024), errc: make(chan error, 1)}
	rf, direct := t.reader()
	type blk struct {
		buf []byte
		off int64
		n   int
	}
	free := make(chan []byte, readBufs)
	for range readBufs {
		buf, release := alignedBuf(writeBuf)
		rb.release = append(rb.release, release)
		free <- buf
	}
	full := make(chan blk, readBufs)
	var rerr error // set before full is closed
	go func() {
		defer close(full)
		for w := range rb.windows {
			if rerr != nil {
				continue
			}
			if w.buffered {
				waitWriteback(t.f, w.off, w.n)
				dropCache(t.f, w.off, w.n)
			}
			for off, end := w.off, w.off+w.n; off < end; {
				buf := <-free
				need := min(int64(len(buf)), end-off)
				if err := readBlock(rf, buf, direct, off, need); err != nil {
					rerr = fmt.Errorf("read back at %d: %w", off, err)
					free <- buf
					break
				}
				full <- blk{buf, off, int(need)}
				off += need
			}
		}
	}()
	go func() {
		for b := range full {
			rb.h.Write(b.buf[:b.n])
			rb.done = b.off + int64(b.n)
			free <- b.buf
		}
		rb.errc <- rerr
	}()
	return rb
}

// add queues a written window; windows must come in order, back to back.
func (rb *readback) add(off, n int64, buffered bool) {
	rb.windows <- window{off, n, buffered}
}

// wait ends the read-back and returns the hash so far and its length.
func (rb *readback) wait() (hash.Hash, int64, error) {
	close(rb.windows)
	err := <-rb.errc
	for _, rel := range rb.release {
		rel()
	}
	return rb.h, rb.done, err
}

// Write opens slot s (see Config.OpenTarget), streams r into it and
// closes it.
func (c *Config) Write(ctx context.Context, s *Slot, r io.Reader, size int64, sum []byte) error {
	t, err := c.OpenTarget(s)
	if err != nil {
		return err
	}
	err = t.Write(ctx, r, size, sum)
	if cerr := t.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close slot %s/%s: %w", s.Class, s.BootName, cerr)
	}
	return err
}

type block struct {
	buf  []byte
	n    int
	off  int64
	refs atomic.Int32 // the writer and the hasher; the last one frees the block
	free chan<- *block
}

// done is called by the writer and by the hasher once each is finished
// with b; the second call makes b free for the next read.
func (b *block) done() {
	if b.refs.Add(-1) == 0 {
		b.free <- b
	}
}

// stream copies r to the device in writeBuf blocks: one goroutine reads,
// one hashes (only without read-back rb), the caller writes; a block is
// reused once written and hashed.
func (t *Target) stream(ctx context.Context, r io.Reader, size int64, rb *readback) (int64, []byte, error) {
	free := make(chan *block, writeBufs)
	for range writeBufs {
		buf, release := alignedBuf(writeBuf)
		defer release()
		free <- &block{buf: buf, free: free}
	}
	full := make(chan *block, writeBufs) // never blocks: holds every block
	stop := make(chan struct{})
	defer close(stop)
	var readErr error // set before full is closed
	go func() {
		defer close(full)
		var off int64
		for {
			var b *block
			select {
			case b = <-free:
			case <-stop:
				return
			}
			want := len(b.buf)
			if size >= 0 && size-off < int64(want) {
				want = int(size - off)
			}
			n, err := io.ReadFull(r, b.buf[:want])
			if n > 0 {
				if off+int64(n) > t.size {
					readErr = fmt.Errorf("%w (%d bytes)", ErrTooLarge, t.size)
					return
				}
				b.n, b.off = n, off
				off += int64(n)
				full <- b
			}
			switch {
			case size >= 0 && off == size:
				return
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				if size >= 0 {
					readErr = fmt.Errorf("%w: %d of %d bytes", ErrShortInput, off, size)
				}
				return
			case err != nil:
				readErr = fmt.Errorf("read input: %w", err)
				return
			}
		}
	}()

	h := sha256.New()
	toHash := make(chan *block, writeBufs)
	var hwg sync.WaitGroup
	hwg.Add(1)
	go hashBlocks(h, toHash, &hwg, rb == nil)
	open := true
	endHash := func() {
		if open {
			close(toHash)
			hwg.Wait()
			open = false
		}
	}
	defer endHash()

	// Whole blocks go to the device with O_DIRECT where it is available;
	// the rest (a short last block, or everything where O_DIRECT is not
	// supported) goes through the page cache with early writeback.
	dw := t.writer()
	var written, kicked int64
	var queued [][2]int64 // buffered windows whose writeback was started
	for b := range full {
		if err := ctx.Err(); err != nil {
			return written, nil, err
		}
		// The hasher and the writer work on b at once, and the writer goes
		// on with the next block without waiting for the hash.
		b.refs.Store(2)
		toHash <- b
		direct, werr := t.writeBlock(dw, b.buf[:b.n], b.off)
		if werr != nil {
			return written, nil, werr
		}
		written += int64(b.n)
		if direct && kicked == b.off {
			// On the device already: read it back at once.
			kicked = written
			if rb != nil {
				rb.add(b.off, int64(b.n), false)
			}
		} else if written-kicked >= writebackWin {
			startWriteback(t.f, kicked, written-kicked)
			queued = append(queued, [2]int64{kicked, written - kicked})
			kicked = written
			// Read back the window before last: its writeback has had a
			// window's time to finish, so waiting for it rarely blocks.
			if rb != nil && len(queued) > 1 {
				rb.add(queued[0][0], queued[0][1], true)
				queued = queued[1:]
			}
		}
		b.done()
	}
	if readErr != nil {
		return written, nil, readErr
	}
	if err := ctx.Err(); err != nil {
		return written, nil, err
	}
	endHash()
	return written, h.Sum(nil), nil
}

func hashBlocks(h hash.Hash, in <-chan *block, wg *sync.WaitGroup, hashing bool) {
	defer wg.Done()
	for b := range in {
		if hashing {
			h.Write(b.buf[:b.n])
		}
		b.done()
	}
}

// hashRange adds bytes [from, to) of f to h, reading the next block while
// hashing the current one. With direct (f is O_DIRECT) buffers are page
// aligned and reads are rounded up to whole pages; from must be aligned.
func hashRange(h hash.Hash, f *os.File, direct bool, from, to int64) error {
	type rb struct {
		buf []byte
		n   int
	}
	free := make(chan []byte, 2)
	for range 2 {
		buf, release := alignedBuf(writeBuf)
		defer release()
		free <- buf
	}
	full := make(chan rb, 2)
	errc := make(chan error, 1)
	go func() {
		defer close(full)
		for off := from; off < to; {
			buf := <-free
			need := min(int64(len(buf)), to-off)
			if err := readBlock(f, buf, direct, off, need); err != nil {
				errc <- err
				return
			}
			off += need
			full <- rb{buf, int(need)}
		}
		errc <- nil
	}()
	for b := range full {
		h.Write(b.buf[:b.n])
		free <- b.buf
	}
	return <-errc
}

// readBlock reads need bytes at off into buf (need <= len(buf)); a short
// read is io.ErrUnexpectedEOF. With direct (f is O_DIRECT) the read is
// rounded up to whole pages, within buf.
func readBlock(f *os.File, buf []byte, direct bool, off, need int64) error {
	want := need
	if direct {
		want = min(int64(len(buf)), (need+directAlign-1)&^(directAlign-1))
	}
	m, err := f.ReadAt(buf[:want], off)
	if int64(m) < need {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}
