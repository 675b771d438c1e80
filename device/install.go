package device

import (
	"bytes"
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
	// Unchanged: a package or file identical to what is installed (same
	// version and sha256); it is not written again and stays as it is.
	Unchanged bool `json:"unchanged,omitempty"`

	index  int         // in the manifest
	typ    string      // slot type of an image
	slot   *slots.Slot // the image's target slot
	booted string      // the running slot
	link   string      // install path of a package, linked to its current version at commit
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
	info := bundleInfo(m, br.SignedManifest())
	out := Outcome{Bundle: info, State: rec.State}
	plan, booted, already, err := e.admit(rec, m, info)
	if already {
		out.Status = StatusAlreadyInstalled
		return out, nil
	}
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

	j := journalOf(m, info, plan, booted, rec.SecurityVersion)
	if _, err := e.runHooks(ctx, HookPreInstall, j, true); err != nil {
		return out, fmt.Errorf("pre-install: %w", err)
	}
	// Nothing is written on a boot that is not confirmed.
	if err := e.confirmFirst(rec); err != nil {
		return out, err
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
	return e.written(ctx, rec, j, m, plan, out, opts, nil)
}

// bundleInfo identifies a verified manifest by the sha256 of its signed bytes.
func bundleInfo(m *bundle.Manifest, signed []byte) BundleInfo {
	sum := sha256.Sum256(signed)
	return BundleInfo{Name: m.Name, Version: m.Version, SecurityVersion: m.SecurityVersion, Digest: hex.EncodeToString(sum[:])}
}

// admit makes the checks Install and Prepare share before anything is
// written: already installed (already is true, nothing else is returned),
// another update under way, then every check of plan.
func (e *Engine) admit(rec *Record, m *bundle.Manifest, info BundleInfo) (plan []PlanItem, booted string, already bool, err error) {
	if rec.Current != nil && rec.Current.Digest == info.Digest && rec.Bundle == nil {
		return nil, "", true, nil
	}
	if rec.Bundle != nil && !terminal(rec.State) {
		if rec.Bundle.Digest == info.Digest {
			return nil, "", false, fmt.Errorf("%w: %s %s is already %s", ErrBusy, info.Name, info.Version, rec.State)
		}
		return nil, "", false, fmt.Errorf("%w: %s %s is %s; roll it back first", ErrBusy, rec.Bundle.Name, rec.Bundle.Version, rec.State)
	}
	booted, err = e.o.Booted()
	if err != nil {
		return nil, "", false, fmt.Errorf("find booted slot: %w", err)
	}
	plan, err = e.plan(rec, m, booted)
	return plan, booted, false, err
}

// journalOf is the progress record of an install about to write plan.
func journalOf(m *bundle.Manifest, info BundleInfo, plan []PlanItem, booted string, secver uint64) *Record {
	j := &Record{State: Writing, Bundle: &info, From: booted, SecurityVersion: secver}
	for _, it := range plan {
		c := &m.Components[it.index]
		if it.Kind == string(bundle.KindImage) {
			j.Target = it.Slot
		}
		p := Progress{Name: it.Component, Kind: it.Kind, Version: it.Version, Class: it.Class, Slot: it.Slot,
			Target: it.Target, Size: it.Size, SHA256: hex.EncodeToString(c.SHA256)}
		if it.Unchanged {
			// Identical to what is installed: nothing is written, so it
			// counts as written from the start (the write loops skip it).
			p.Written, p.Done = it.Size, true
		} else if it.Kind == string(bundle.KindFile) {
			p.Stage = it.Target + stageExt // an unchanged file has none: commit leaves it alone
		}
		p.Link = it.link
		j.Components = append(j.Components, p)
	}
	return j
}

// written moves an install whose components are all written and verified
// (j) into state.json as Written, runs post-install.d and, unless
// opts.NoAdvance, continues: bootloader try and the reboot the policy allows.
func (e *Engine) written(ctx context.Context, rec, j *Record, m *bundle.Manifest, plan []PlanItem, out Outcome, opts InstallOptions, afterSave func() error) (Outcome, error) {
	rec.State = Written
	rec.Bundle, rec.Target, rec.From, rec.Components = j.Bundle, j.Target, j.From, j.Components
	rec.Reason, rec.BootID, rec.Transitions = "", "", 0
	rec.Offer, rec.Reboot = j.Offer, j.Reboot
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
	if afterSave != nil {
		if err := afterSave(); err != nil {
			return out, err
		}
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
			rel := strings.TrimPrefix(c.Path, "/")
			if err := localName(rel); err != nil {
				return nil, fmt.Errorf("check component %q: package path: %w", c.Name, err)
			}
			it.Target = filepath.Join(e.packagesDir(), filepath.FromSlash(rel), c.Version+"-"+hex.EncodeToString(c.SHA256[:4]))
			// The same version and content already current: nothing to unpack.
			it.Unchanged = installed[c.Name] == c.Version && isCurrentPackage(it.Target)
			if strings.HasPrefix(c.Path, "/") {
				// An absolute install path becomes a symlink to the package's current version.
				it.link = filepath.Join(e.cfg.FileRoot, filepath.FromSlash(rel))
			}
		case bundle.KindFile:
			rel := strings.TrimPrefix(c.Path, "/")
			if err := localName(rel); err != nil {
				return nil, fmt.Errorf("check component %q: file path: %w", c.Name, err)
			}
			it.Target = filepath.Join(e.cfg.FileRoot, filepath.FromSlash(rel))
			// The same version with the same bytes in place: nothing to
			// stage (the self-update binary always goes through its check).
			it.Unchanged = installed[c.Name] == c.Version && !e.isSelf(Progress{Kind: "file", Target: it.Target}) &&
				sameFile(it.Target, c.Size, c.SHA256)
		}
		plan = append(plan, it)
	}
	return plan, nil
}

// isCurrentPackage reports whether versionDir is the package's current
// version (its current link points at it and it exists).
func isCurrentPackage(versionDir string) bool {
	cur, err := os.Readlink(filepath.Join(filepath.Dir(versionDir), currentLink))
	if err != nil || cur != filepath.Base(versionDir) {
		return false
	}
	fi, err := os.Stat(versionDir)
	return err == nil && fi.IsDir()
}

// sameFile reports whether path is a regular file of size bytes whose
// sha256 is sum.
func sameFile(path string, size uint64, sum []byte) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || uint64(fi.Size()) != size {
		return false
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return bytes.Equal(h.Sum(nil), sum)
}

// confirmFirst confirms the running boot before an install or a download
// starts on it (the daemon's ConfirmBoot may not have had the lock yet): a
// try set later needs the running slot's tries refilled as its fallback.
// It runs once the bundle passed its checks and the pre-install hooks, so
// a refused bundle changes nothing.
func (e *Engine) confirmFirst(rec *Record) error {
	err := e.confirm(rec)
	if errors.Is(err, errStrayTrial) {
		return fmt.Errorf("%w: %v", ErrBusy, err)
	}
	return err
}
