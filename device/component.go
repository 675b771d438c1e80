package device

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots"
)

// writeAll writes the components in plan order, saving progress in the journal.
func (e *Engine) writeAll(ctx context.Context, ra io.ReaderAt, m *bundle.Manifest, layout [][]bundle.Extent, plan []PlanItem, j *Record, opts InstallOptions) error {
	for k, it := range plan {
		if e.o.onWrite != nil {
			e.o.onWrite(it.Component)
		}
		if it.Unchanged { // journalOf marked it written
			if opts.Progress != nil {
				opts.Progress(it.Component, it.Size, it.Size)
			}
			continue
		}
		c := &m.Components[it.index]
		s := newChunkStream(ctx, ra, c, layout[it.index])
		prog := func(n uint64) {
			if opts.Progress != nil {
				opts.Progress(it.Component, n, it.Size)
			}
		}
		var err error
		switch c.Kind {
		case bundle.KindImage:
			err = e.writeImage(ctx, s, it, c, prog)
		case bundle.KindPackage:
			err = e.writePackage(s, it, prog)
		case bundle.KindFile:
			err = e.writeFile(s, it, &j.Components[k], prog)
		}
		s.Close()
		if err != nil {
			return fmt.Errorf("install component %q: %w", it.Component, err)
		}
		j.Components[k].Written, j.Components[k].Done = it.Size, true
		if err := e.journal().Save(j); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) writeImage(ctx context.Context, s *chunkStream, it PlanItem, c *bundle.Component, prog func(uint64)) error {
	// slots.OpenTarget refuses the booted slot and a mounted device, and
	// holds a block device open exclusively (no mount) while it is written.
	guard, err := slots.OpenTarget(it.slot, slots.TargetOptions{Booted: it.booted, Mountinfo: e.o.Slots.Paths.Mountinfo, Sys: e.o.Slots.Paths.Sys})
	if err != nil {
		return err
	}
	defer guard.Close()
	f, err := openSlotFile(it.Target, it.typ)
	if err != nil {
		return err
	}
	// With read-back on, each range is read back from the medium as soon
	// as its writeback completed, while later ranges are still written.
	var rb *readBacker
	var flushed func(off, n int64)
	if it.verify {
		if rb, err = newReadBacker(ctx, it.Target, c.Chunks); err != nil {
			f.Close()
			return err
		}
		flushed = rb.flushed
	}
	fw := newFlushWriter(f, flushed)
	defer spareProc()()
	var w io.Writer = fw
	if e.o.wrapSlot != nil {
		w = e.o.wrapSlot(it.Component, w)
	}
	pw := &progressWriter{w: w, fn: prog}
	_, err = s.WriteTo(pw)
	fw.Close()
	if err == nil && it.typ == slots.TypeFile {
		err = f.Truncate(int64(c.Size)) // no old tail after a shorter image
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if rb != nil {
			rb.abort()
		}
		return err
	}
	if rb != nil {
		return rb.finish(c.Size)
	}
	return nil
}

func (e *Engine) writePackage(s io.Reader, it PlanItem, prog func(uint64)) error {
	partial := it.Target + partialExt
	_ = os.RemoveAll(partial)
	if err := discardIfNotCurrent(it.Target); err != nil {
		return err
	}
	var r io.Reader = s
	if e.o.wrapSlot != nil {
		pr, pw := io.Pipe()
		go func() {
			_, err := io.Copy(e.o.wrapSlot(it.Component, &progressWriter{w: pw, fn: prog}), s)
			pw.CloseWithError(err)
		}()
		r = pr
		defer pr.Close()
	}
	if err := unpack(r, partial, it.Size); err != nil {
		return err
	}
	if err := os.Rename(partial, it.Target); err != nil {
		return fmt.Errorf("stage package: %w", err)
	}
	prog(it.Size)
	return syncDir(filepath.Dir(it.Target))
}

// discardIfNotCurrent removes a leftover version dir of the same name.
func discardIfNotCurrent(dir string) error {
	cur, _ := os.Readlink(filepath.Join(filepath.Dir(dir), currentLink))
	if cur == filepath.Base(dir) {
		return fmt.Errorf("stage package: %s is the current version", dir)
	}
	return os.RemoveAll(dir)
}

func (e *Engine) writeFile(s io.Reader, it PlanItem, p *Progress, prog func(uint64)) error {
	stage := p.Stage
	for d := filepath.Dir(stage); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		p.MadeDir = d
	}
	if err := os.MkdirAll(filepath.Dir(stage), 0o755); err != nil {
		return fmt.Errorf("stage file: %w", err)
	}
	f, err := os.OpenFile(stage, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("stage file: %w", err)
	}
	var w io.Writer = f
	if e.o.wrapSlot != nil {
		w = e.o.wrapSlot(it.Component, w)
	}
	_, err = io.Copy(&progressWriter{w: w, fn: prog}, s)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("stage file: %w", err)
	}
	return syncDir(filepath.Dir(stage))
}
