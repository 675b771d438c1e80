package disk

import (
	"fmt"
	"io"
)

// Cpio writes a newc ("070701") cpio archive, the format the Linux kernel
// unpacks as an initramfs.
type Cpio struct {
	w   io.Writer
	ino uint32
	off int64
	err error
}

// NewCpio returns an archive writer on w.
func NewCpio(w io.Writer) *Cpio { return &Cpio{w: w, ino: 1} }

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChr  = 0o020000
	modeLink = 0o120000
)

// Dir adds a directory.
func (c *Cpio) Dir(name string, perm uint32) error {
	return c.entry(name, modeDir|perm, 0, 0, nil)
}

// File adds a regular file with the given contents.
func (c *Cpio) File(name string, perm uint32, data []byte) error {
	return c.entry(name, modeFile|perm, 0, 0, data)
}

// CharDev adds a character device node.
func (c *Cpio) CharDev(name string, perm, major, minor uint32) error {
	return c.entry(name, modeChr|perm, major, minor, nil)
}

// Symlink adds a symbolic link name -> target.
func (c *Cpio) Symlink(name, target string) error {
	return c.entry(name, modeLink|0o777, 0, 0, []byte(target))
}

// Close writes the trailer.
func (c *Cpio) Close() error {
	if err := c.entry("TRAILER!!!", 0, 0, 0, nil); err != nil {
		return err
	}
	return c.err
}

func (c *Cpio) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *Cpio) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *Cpio) entry(name string, mode, rmajor, rminor uint32, data []byte) error {
	ino := c.ino
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
	if c.err != nil {
		return fmt.Errorf("write cpio entry %s: %w", name, c.err)
	}
	return nil
}
