package device

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots"
)

// InstallOptions tune one Install.
type InstallOptions struct {
	// DryRun verifies the bundle and every chunk, makes every check and
	// returns the plan, changing nothing on disk.
	DryRun bool
	// Progress is called as bytes of a component are written.
	Progress func(component string, done, total uint64)
	// NoAdvance stops after the components are written and verified
	// (state Written): no bootloader change, no reboot.
	NoAdvance bool
}

// PlanItem is one component of an install plan, in install order.
type PlanItem struct {
	Component string `json:"component"`
	Kind      string `json:"kind"`
	Version   string `json:"version"`
	Class     string `json:"class,omitempty"`
	Slot      string `json:"slot,omitempty"`
	Target    string `json:"target"`
	Size      uint64 `json:"size"`

	index  int         // in the manifest
	typ    string      // slot type of an image
	slot   *slots.Slot // the image's target slot
	booted string      // the running slot
	verify bool        // read back after writing
}

// Outcome says what an Install did.
type Outcome struct {
	// Status: "dry-run", "already-installed", "committed" (no image: done
	// without a reboot), "rebooting", "waiting-window", "waiting-hub",
	// "written" (NoAdvance).
	Status string     `json:"status"`
	Bundle BundleInfo `json:"bundle"`
	Plan   []PlanItem `json:"plan"`
	State  State      `json:"state"`
}

// Outcome statuses.
const (
	StatusDryRun           = "dry-run"
	StatusAlreadyInstalled = "already-installed"
	StatusCommitted        = "committed"
	StatusRebooting        = "rebooting"
	StatusWaitingWindow    = "waiting-window"
	StatusWaitingHub       = "waiting-hub"
	StatusWritten          = "written"
)

// journalName is the file that tracks an install while its components are
// written. state.json only changes once everything is written and verified,
// so a bundle that turns out bad midway leaves it untouched.
const journalName = "install.json"

func (e *Engine) journal() *Store {
	return &Store{Dir: e.cfg.DataDir, Name: journalName, crash: e.o.crash}
}

// Install verifies the bundle read from r and installs it: checks, ordered
// writes, read-back verify, then (unless opts.NoAdvance) the bootloader try
// and the reboot the policy allows. r is read at random offsets when it is
// an *os.File (or any io.ReaderAt with a Size or Stat method); otherwise it
// is first spooled to the data dir.
func (e *Engine) Install(ctx context.Context, r io.Reader, opts InstallOptions) (Outcome, error) {
	unlock, err := e.lock()
	if err != nil {
		return Outcome{}, err
	}
	defer unlock()
	if err := e.recoverJournal(ctx); err != nil {
		return Outcome{}, err
	}
	rec, err := e.load()
	if err != nil {
		return Outcome{}, err
	}
	ra, size, done, err := e.source(ctx, r)
	if err != nil {
		return Outcome{}, err
	}
	defer done()
	trust, err := e.trust()
	if err != nil {
		return Outcome{}, err
	}
	br, err := bundle.Open(io.NewSectionReader(ra, 0, size), trust, bundle.WithReadAhead(0))
	if err != nil {
		return Outcome{}, fmt.Errorf("verify bundle: %w", err)
	}
	m := br.Manifest()
	if want := br.DataOffset() + m.StoredSize(); size < want {
		return Outcome{}, fmt.Errorf("verify bundle: %d bytes, the manifest needs %d: %w", size, want, bundle.ErrTruncated)
	} else if size > want {
		return Outcome{}, fmt.Errorf("verify bundle: %d bytes after the last chunk: %w", size-want, bundle.ErrMalformed)
	}
	sum := sha256.Sum256(br.SignedManifest())
	info := BundleInfo{Name: m.Name, Version: m.Version, SecurityVersion: m.SecurityVersion, Digest: hex.EncodeToString(sum[:])}
	out := Outcome{Bundle: info, State: rec.State}
	if rec.Current != nil && rec.Current.Digest == info.Digest && rec.Bundle == nil {
		out.Status = StatusAlreadyInstalled
		return out, nil
	}
	if rec.Bundle != nil && !terminal(rec.State) {
		if rec.Bundle.Digest == info.Digest {
			return out, fmt.Errorf("%w: %s %s is already %s", ErrBusy, info.Name, info.Version, rec.State)
		}
		return out, fmt.Errorf("%w: %s %s is %s; roll it back first", ErrBusy, rec.Bundle.Name, rec.Bundle.Version, rec.State)
	}
	booted, err := e.o.Booted()
	if err != nil {
		return out, fmt.Errorf("find booted slot: %w", err)
	}
	plan, err := e.plan(rec, m, booted)
	if err != nil {
		return out, err
	}
	out.Plan = plan
	layout := bundle.Layout(m, br.DataOffset())
	if opts.DryRun {
		for _, it := range plan {
			s := newChunkStream(ctx, ra, &m.Components[it.index], layout[it.index])
			_, err := io.Copy(io.Discard, s)
			s.Close()
			if err != nil {
				return out, fmt.Errorf("verify component %q: %w", it.Component, err)
			}
		}
		out.Status = StatusDryRun
		return out, nil
	}

	j := &Record{State: Writing, Bundle: &info, From: booted, SecurityVersion: rec.SecurityVersion}
	for _, it := range plan {
		c := &m.Components[it.index]
		if it.Kind == string(bundle.KindImage) {
			j.Target = it.Slot
		}
		p := Progress{Name: it.Component, Kind: it.Kind, Version: it.Version, Class: it.Class, Slot: it.Slot,
			Target: it.Target, Size: it.Size, SHA256: hex.EncodeToString(c.SHA256)}
		if it.Kind == string(bundle.KindFile) {
			p.Stage = it.Target + stageExt
		}
		j.Components = append(j.Components, p)
	}
	if _, err := e.runHooks(ctx, HookPreInstall, j, true); err != nil {
		return out, fmt.Errorf("pre-install: %w", err)
	}
	// From here on the journal says what to clean up if the install stops.
	if err := e.journal().Save(j); err != nil {
		return out, err
	}
	err = e.writeAll(ctx, ra, m, layout, plan, j, opts)
	for _, p := range j.Components {
		if err == nil && e.isSelf(p) {
			err = e.selfCheck(ctx, p.Stage)
		}
	}
	if err != nil {
		if isPowerCut(err) {
			return out, err
		}
		if aerr := e.abandonJournal(j, rec, false); aerr != nil {
			return out, errors.Join(err, aerr)
		}
		return out, err
	}
	// Everything is written and verified: move it into state.json.
	rec.State = Written
	rec.Bundle, rec.Target, rec.From, rec.Components = j.Bundle, j.Target, j.From, j.Components
	rec.Reason, rec.BootID, rec.Transitions = "", "", 0
	rec.Pending = map[string]ChunkIndex{}
	for _, it := range plan {
		if it.Kind != string(bundle.KindImage) {
			continue
		}
		c := &m.Components[it.index]
		key := it.Class + "/" + it.Slot
		delete(rec.Chunks, key)
		rec.Pending[key] = chunkIndexOf(c)
	}
	if err := e.save(rec, Written); err != nil {
		return out, err
	}
	if err := e.journal().Remove(); err != nil {
		return out, err
	}
	if err := e.crashAt("journal-removed"); err != nil {
		return out, err
	}
	if err := e.warnHooks(ctx, HookPostInstall, rec, rec); err != nil {
		return out, err
	}
	if opts.NoAdvance {
		out.Status, out.State = StatusWritten, Written
		return out, nil
	}
	status, err := e.advance(ctx)
	out.Status = status
	if rec2, lerr := e.load(); lerr == nil {
		out.State = rec2.State
	}
	return out, err
}

// terminal reports whether s ends an update (nothing is under way).
func terminal(s State) bool {
	switch s {
	case Idle, Committed, RolledBack, Abandoned:
		return true
	}
	return false
}

// plan makes every check that needs no payload and returns the components
// in install order with their targets.
func (e *Engine) plan(rec *Record, m *bundle.Manifest, booted string) ([]PlanItem, error) {
	if e.cfg.HardwareID == "" || !slices.Contains(m.Compatible, e.cfg.HardwareID) {
		return nil, fmt.Errorf("%w: hardware id %q, bundle is for %s", ErrIncompatible, e.cfg.HardwareID, strings.Join(m.Compatible, ", "))
	}
	if now := e.o.Now().Unix(); m.Expires != 0 && now > m.Expires {
		return nil, fmt.Errorf("%w: %s %s expired at unix %d (now %d)", ErrExpired, m.Name, m.Version, m.Expires, now)
	}
	if m.SecurityVersion < rec.SecurityVersion {
		return nil, fmt.Errorf("%w: bundle has %d, device has accepted %d", ErrSecurityVersion, m.SecurityVersion, rec.SecurityVersion)
	}
	installed := e.installed(rec)
	if err := checkRequires(m, installed); err != nil {
		return nil, err
	}
	idx, err := order(m, installed)
	if err != nil {
		return nil, err
	}
	bs, err := e.o.Bootloader.State()
	if err != nil {
		return nil, fmt.Errorf("read bootloader state: %w", err)
	}
	if bs.Trial != "" {
		return nil, fmt.Errorf("%w: slot %s is on an uncommitted trial boot", ErrBusy, bs.Trial)
	}
	classes := map[string]bool{}
	plan := make([]PlanItem, 0, len(idx))
	for _, i := range idx {
		c := &m.Components[i]
		it := PlanItem{Component: c.Name, Kind: string(c.Kind), Version: c.Version, Size: c.Size, index: i}
		switch c.Kind {
		case bundle.KindImage:
			if classes[c.Slot] {
				return nil, fmt.Errorf("check component %q: a second image for slot class %q", c.Name, c.Slot)
			}
			classes[c.Slot] = true
			cl, err := e.o.Slots.Class(c.Slot)
			if err != nil {
				return nil, fmt.Errorf("check component %q: %w", c.Name, err)
			}
			s, err := cl.Other(booted)
			if err != nil {
				return nil, fmt.Errorf("check component %q: %w", c.Name, err)
			}
			if s.Type == slots.TypeDir {
				return nil, fmt.Errorf("check component %q: slot %s of class %s is a directory, not an image slot", c.Name, s.BootName, c.Slot)
			}
			if s.Size > 0 && c.Size > uint64(s.Size) {
				return nil, fmt.Errorf("check component %q: %d bytes do not fit slot %s of class %s (%d bytes)", c.Name, c.Size, s.BootName, c.Slot, s.Size)
			}
			it.Class, it.Slot, it.Target, it.typ, it.slot, it.booted = c.Slot, s.BootName, s.Device, s.Type, s, booted
			switch e.cfg.Verify {
			case VerifyOn:
				it.verify = true
			case VerifyAuto:
				it.verify = s.Verify != nil && *s.Verify
			}
		case bundle.KindPackage:
			if err := localName(c.Path); err != nil {
				return nil, fmt.Errorf("check component %q: package path: %w", c.Name, err)
			}
			it.Target = filepath.Join(e.packagesDir(), filepath.FromSlash(c.Path), c.Version+"-"+hex.EncodeToString(c.SHA256[:4]))
		case bundle.KindFile:
			rel := strings.TrimPrefix(c.Path, "/")
			if err := localName(rel); err != nil {
				return nil, fmt.Errorf("check component %q: file path: %w", c.Name, err)
			}
			it.Target = filepath.Join(e.cfg.FileRoot, filepath.FromSlash(rel))
		}
		plan = append(plan, it)
	}
	return plan, nil
}

// writeAll writes the components in plan order, saving progress in the journal.
func (e *Engine) writeAll(ctx context.Context, ra io.ReaderAt, m *bundle.Manifest, layout [][]bundle.Extent, plan []PlanItem, j *Record, opts InstallOptions) error {
	for k, it := range plan {
		if e.o.onWrite != nil {
			e.o.onWrite(it.Component)
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
	fw := newFlushWriter(f)
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
		return err
	}
	if it.verify {
		return readBack(ctx, it.Target, c.Size, c.SHA256)
	}
	return nil
}

func (e *Engine) writePackage(s *chunkStream, it PlanItem, prog func(uint64)) error {
	partial := it.Target + partialExt
	_ = os.RemoveAll(partial)
	if err := discardIfNotCurrent(it.Target); err != nil {
		return err
	}
	var r io.Reader = s
	if e.o.wrapSlot != nil {
		pr, pw := io.Pipe()
		go func() {
			_, err := s.WriteTo(e.o.wrapSlot(it.Component, &progressWriter{w: pw, fn: prog}))
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

func (e *Engine) writeFile(s *chunkStream, it PlanItem, p *Progress, prog func(uint64)) error {
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
	_, err = s.WriteTo(&progressWriter{w: w, fn: prog})
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
