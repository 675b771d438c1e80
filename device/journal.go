package device

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/autopatcher/autopatcher/bundle"
)

// journalName is the file that tracks an install while its components are
// written. state.json only changes once everything is written and verified,
// so a bundle that turns out bad midway leaves it untouched.
const journalName = "install.json"

func (e *Engine) journal() *Store {
	return &Store{Dir: e.cfg.DataDir, Name: journalName, crash: e.o.crash}
}

// chunkIndexOf is the chunk table of an image component, kept for the slot it is written to.
func chunkIndexOf(c *bundle.Component) ChunkIndex {
	ci := ChunkIndex{Component: c.Name, Version: c.Version, Size: c.Size, SHA256: hex.EncodeToString(c.SHA256)}
	for _, ch := range c.Chunks {
		ci.Chunks = append(ci.Chunks, ChunkSpan{Offset: ch.Offset, Length: ch.Length, SHA256: ch.SHA256})
	}
	return ci
}

// cleanStaged removes what an unfinished install staged: package version
// dirs (and their package dir if it is left empty) and staged files.
func cleanStaged(comps []Progress) {
	for _, p := range comps {
		switch p.Kind {
		case string(bundle.KindPackage):
			discardPackage(p.Target)
			pkgDir := filepath.Dir(p.Target)
			if ents, err := os.ReadDir(pkgDir); err == nil && len(ents) == 0 {
				os.Remove(pkgDir)
			}
		case string(bundle.KindFile):
			if p.Stage != "" {
				os.Remove(p.Stage)
			}
			// Remove the directories the install created, if still empty.
			if p.MadeDir != "" {
				for d := filepath.Dir(p.Stage); ; d = filepath.Dir(d) {
					if os.Remove(d) != nil || d == p.MadeDir || d == filepath.Dir(d) {
						break
					}
				}
			}
		}
	}
}

// abandonJournal cleans up after an install that stopped while writing and
// removes the journal. state.json changes only if it held a chunk index of
// a slot that was being overwritten, or if record is set (the report of an
// install interrupted by a crash).
func (e *Engine) abandonJournal(j *Record, rec *Record, report bool) error {
	cleanStaged(j.Components)
	changed := false
	for _, p := range j.Components {
		if p.Kind == string(bundle.KindImage) {
			if _, ok := rec.Chunks[p.Class+"/"+p.Slot]; ok {
				delete(rec.Chunks, p.Class+"/"+p.Slot)
				changed = true
			}
		}
	}
	if report {
		rec.Last = &Result{State: Abandoned, Bundle: *j.Bundle, Reason: "install interrupted while writing; staged files removed", Time: e.o.Now().UTC()}
		changed = true
	}
	if changed {
		if err := e.store.Save(rec); err != nil {
			return err
		}
	}
	return e.journal().Remove()
}

// recoverJournal cleans up an install that a crash stopped while writing.
func (e *Engine) recoverJournal(ctx context.Context) error {
	// Spool files of installs from stdin or a URL that a crash left behind
	// (installs spool under the lock, so any found here are stale).
	if old, _ := filepath.Glob(filepath.Join(e.cfg.DataDir, "incoming-*.apb")); len(old) > 0 {
		for _, f := range old {
			os.Remove(f)
		}
	}
	js := e.journal()
	if !js.Exists() {
		os.Remove(js.Path() + ".tmp") // a cut before the first journal rename
		return nil
	}
	j, err := js.Load()
	if err != nil || j.Bundle == nil {
		e.log.Warn("install journal unreadable; removing it", "err", err)
		return js.Remove()
	}
	rec, err := e.load()
	if err != nil {
		return err
	}
	if rec.Bundle != nil && !terminal(rec.State) && rec.Bundle.Digest == j.Bundle.Digest {
		// The cut came after state.json took over: the journal is stale.
		return js.Remove()
	}
	e.log.Info("abandoning install interrupted while writing", "bundle", j.Bundle.Name, "version", j.Bundle.Version)
	return e.abandonJournal(j, rec, true)
}

// source returns r as an io.ReaderAt with its size, spooling it to the data
// dir if it cannot be read at random offsets.
func (e *Engine) source(ctx context.Context, r io.Reader) (io.ReaderAt, int64, func(), error) {
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			return f, fi.Size(), func() {}, nil
		}
	}
	if ra, ok := r.(interface {
		io.ReaderAt
		Size() int64
	}); ok {
		return ra, ra.Size(), func() {}, nil
	}
	if err := os.MkdirAll(e.cfg.DataDir, 0o700); err != nil {
		return nil, 0, nil, fmt.Errorf("spool bundle: %w", err)
	}
	f, err := os.CreateTemp(e.cfg.DataDir, "incoming-*.apb")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("spool bundle: %w", err)
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("spool bundle: %w", err)
	}
	return f, n, cleanup, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
