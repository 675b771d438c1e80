package disk

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
)

const MiB = 1 << 20

// Partition names of the armv7 layout.
const (
	PartBoot  = "boot"
	PartSlotA = "A"
	PartSlotB = "B"
	PartData  = "data"
)

// Layout is the armv7 target's partition table (see the package doc).
func Layout() []Partition {
	return []Partition{
		{Name: PartBoot, Start: 1 * MiB, Size: 16 * MiB, Type: TypeFAT16LBA, Bootable: true},
		{Name: PartSlotA, Start: 17 * MiB, Size: 32 * MiB, Type: TypeLinux},
		{Name: PartSlotB, Start: 49 * MiB, Size: 32 * MiB, Type: TypeLinux},
		{Name: PartData, Start: 81 * MiB, Size: 96 * MiB, Type: TypeLinux},
	}
}

// Find returns the partition called name.
func Find(parts []Partition, name string) (Partition, error) {
	for _, p := range parts {
		if p.Name == name {
			return p, nil
		}
	}
	return Partition{}, fmt.Errorf("%w: no partition %q", ErrLayout, name)
}

func run(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("run %s %v: %w: %s", name, args, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// FAT creates a FAT filesystem image of size bytes at path (FAT32 if fat32,
// else FAT16) and copies files into its root; keys are file names.
func FAT(ctx context.Context, path string, size int64, fat32 bool, label string, files map[string][]byte) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	bits := "16"
	if fat32 {
		bits = "32"
	}
	if err := run(ctx, nil, "mkfs.vfat", "-F", bits, "-n", label, "-C", path, fmt.Sprint(size/1024)); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	tmp, err := os.MkdirTemp("", "fat-*")
	if err != nil {
		return fmt.Errorf("create temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, n := range names {
		src := filepath.Join(tmp, filepath.Base(n))
		if err := os.WriteFile(src, files[n], 0o644); err != nil {
			return fmt.Errorf("write %s: %w", src, err)
		}
		if err := run(ctx, []string{"MTOOLS_SKIP_CHECK=1"}, "mcopy", "-o", "-i", path, src, "::"+n); err != nil {
			return err
		}
	}
	return nil
}

// Ext4 creates an ext4 filesystem image of size bytes at path holding the
// contents of dir. Slots have no journal (they are written whole and never
// mounted read-write) and few inodes; the data partition has a journal.
func Ext4(ctx context.Context, path string, size int64, label, dir string, journal bool) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	args := []string{"-q", "-F", "-m", "0", "-L", label, "-E", "root_owner=0:0"}
	if journal {
		args = append(args, "-O", "has_journal")
	} else {
		// A slot holds a handful of files: few inodes, more room for data.
		args = append(args, "-O", "^has_journal", "-N", "64")
	}
	args = append(args, "-d", dir, path, fmt.Sprint(size/1024)+"k")
	return run(ctx, []string{"E2FSPROGS_FAKE_TIME=1700000000"}, "mkfs.ext4", args...)
}

// Assemble writes a disk image at out: the MBR for parts, then each
// partition's content file (images[name]; missing ones are left as zeros)
// copied at the partition's offset. The image is sparse where possible. It
// is not fsynced: QEMU and the tools that read it next share the page cache,
// and nothing needs it to survive a crash of the host.
func Assemble(out string, parts []Partition, images map[string]string) error {
	mbr, err := MBR(parts, 0x41504154) // "TAPA"
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	defer f.Close()
	end := int64(0)
	for _, p := range parts {
		end = max(end, p.End())
	}
	if err := f.Truncate(end); err != nil {
		return fmt.Errorf("size disk image: %w", err)
	}
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("write MBR: %w", err)
	}
	for _, p := range parts {
		src, ok := images[p.Name]
		if !ok {
			continue
		}
		if err := copyAt(f, p, src); err != nil {
			return err
		}
	}
	return f.Close()
}

func copyAt(f *os.File, p Partition, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open partition image: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("stat partition image: %w", err)
	}
	if st.Size() > p.Size {
		return fmt.Errorf("%w: %s is %d bytes, partition %s holds %d", ErrLayout, src, st.Size(), p.Name, p.Size)
	}
	w := io.NewOffsetWriter(f, p.Start)
	if _, err := io.Copy(w, in); err != nil {
		return fmt.Errorf("copy %s into partition %s: %w", src, p.Name, err)
	}
	return nil
}

// Extract copies partition p of the disk image at path into out.
func Extract(path string, p Partition, out string) error {
	in, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open disk image: %w", err)
	}
	defer in.Close()
	o, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	defer o.Close()
	if _, err := io.Copy(o, io.NewSectionReader(in, p.Start, p.Size)); err != nil {
		return fmt.Errorf("extract partition %s: %w", p.Name, err)
	}
	return o.Close()
}

// Insert copies the file src over partition p of the disk image at path.
func Insert(path string, p Partition, src string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open disk image: %w", err)
	}
	defer f.Close()
	if err := copyAt(f, p, src); err != nil {
		return err
	}
	return f.Close()
}
