package device

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots"
)

// Download errors.
var (
	ErrIncomplete = errors.New("device: download incomplete")
	ErrNoDownload = errors.New("device: no download under way")
)

// downloadDirName holds the chunk bitmaps and the staging files of a
// download under the data dir.
const downloadDirName = "download"

// markFlushEvery is how many chunks (about 4 MiB) may be marked done before the sink is
// fsynced and the bitmap persisted (and at the end of every fetch).
const markFlushEvery = 64

// DownloadOptions tune one Prepare.
type DownloadOptions struct {
	// Offer is the hub's offer id, persisted with the state.
	Offer string
	// Reboot overrides reboot.policy for this update (the offer's policy).
	Reboot *RebootPlan
	// NoAdvance stops Finish at state Written (no bootloader try, no reboot).
	NoAdvance bool
	// Progress is called as bytes of a component are unpacked or read back.
	Progress func(component string, done, total uint64)
}

// Download is a bundle being fetched chunk by chunk into its final places:
// images straight into the inactive slot, packages and files into staging
// files on the data dir. Which chunks are written is persisted per component
// (a bitmap), so a download resumed after a disconnect, a daemon restart or
// a reboot asks only for what is missing. Download implements the Fetcher's
// progress interface (Done, MarkDone) for all components at once.
type Download struct {
	e       *Engine
	m       *bundle.Manifest
	info    BundleInfo
	opts    DownloadOptions
	plan    []PlanItem
	booted  string
	dir     string
	already bool
	resumed bool

	mu    sync.Mutex
	sinks map[int]*sink // by manifest index
	stats DownloadStats
}

// DownloadStats says where the chunks of a download came from: fetched
// from the hub or copied from the active slot (delta).
type DownloadStats struct {
	Bundle       BundleInfo `json:"bundle"`
	Chunks       int        `json:"chunks"`        // chunks of the components downloaded
	Fetched      int        `json:"fetched"`       // fetched from the hub by this run
	FetchedBytes uint64     `json:"fetched_bytes"` // their uncompressed bytes
	Copied       int        `json:"copied"`        // copied from the active slot by this run
	CopiedBytes  uint64     `json:"copied_bytes"`
	From         string     `json:"from,omitempty"`    // the active slot chunks are copied from
	Earlier      int        `json:"earlier,omitempty"` // already written before a resume
	Time         time.Time  `json:"time"`
}

// String is the summary shown to operators, e.g. "fetched 1 of 64 chunks
// (34 KiB), 63 copied from slot A".
func (s DownloadStats) String() string {
	out := fmt.Sprintf("fetched %d of %d chunks (%s), %d copied", s.Fetched, s.Chunks, sizeString(s.FetchedBytes), s.Copied)
	if s.From != "" {
		out += " from slot " + s.From
	}
	if s.Earlier > 0 {
		out += fmt.Sprintf(", %d fetched before a resume", s.Earlier)
	}
	return out
}

func sizeString(n uint64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", (n+512)>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// downloadStatsName is the file on the data dir with the stats of the last
// download that finished.
const downloadStatsName = "last-download.json"

// Stats returns where the chunks of this download came from so far.
func (d *Download) Stats() DownloadStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// sink is where the chunks of one component go.
type sink struct {
	it       PlanItem
	c        *bundle.Component
	f        *os.File  // slot or staging file
	guard    io.Closer // the slot held by slots.OpenTarget
	path     string    // slot device or staging file
	bits     []byte
	count    int
	dirty    int
	bitsPath string
	local    *localChunks
}

// Prepare starts (or resumes) the download of a bundle from its signed
// manifest: the signatures are verified with the trust store before
// anything is decoded, then every check of Install is made (hardware,
// expiry, security version, requires and depends, order, another update
// under way). The state becomes Downloading with the offer id. A download of
// the same bundle already under way is resumed with its persisted chunk
// bitmaps; one of another bundle is abandoned first. When the bundle is the
// committed one, the Download says AlreadyInstalled and holds nothing.
func (e *Engine) Prepare(ctx context.Context, signedManifest []byte, opts DownloadOptions) (*Download, error) {
	trust, err := e.trust()
	if err != nil {
		return nil, err
	}
	m, err := bundle.VerifyManifest(signedManifest, trust)
	if err != nil {
		return nil, fmt.Errorf("verify manifest: %w", err)
	}
	unlock, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := e.recoverJournal(ctx); err != nil {
		return nil, err
	}
	rec, err := e.load()
	if err != nil {
		return nil, err
	}
	info := bundleInfo(m, signedManifest)
	d := &Download{e: e, m: m, info: info, opts: opts, dir: filepath.Join(e.cfg.DataDir, downloadDirName), sinks: map[int]*sink{}}
	if rec.State == Downloading && rec.Bundle != nil {
		booted, berr := e.o.Booted()
		if rec.Bundle.Digest == info.Digest && berr == nil && booted == rec.From {
			plan, err := e.plan(rec, m, booted)
			if err != nil {
				if aerr := e.abandonDownload(rec, err.Error()); aerr != nil {
					return nil, errors.Join(err, aerr)
				}
				return nil, err
			}
			if opts.Offer != "" && opts.Offer != rec.Offer || opts.Reboot != nil {
				rec.Offer, rec.Reboot = opts.Offer, opts.Reboot
				if err := e.store.Save(rec); err != nil {
					return nil, err
				}
			}
			if err := e.confirmFirst(rec); err != nil {
				return nil, err
			}
			d.plan, d.booted, d.resumed = plan, booted, true
			if err := d.open(rec, false); err != nil {
				return nil, err
			}
			return d, nil
		}
		e.log.Info("abandoning the download of another bundle", "bundle", rec.Bundle.Name, "version", rec.Bundle.Version)
		if err := e.abandonDownload(rec, fmt.Sprintf("superseded by %s %s", info.Name, info.Version)); err != nil {
			return nil, err
		}
	}
	plan, booted, already, err := e.admit(rec, m, info)
	if already {
		d.already = true
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	d.plan, d.booted = plan, booted
	j := journalOf(m, info, plan, booted, rec.SecurityVersion)
	if _, err := e.runHooks(ctx, HookPreInstall, j, true); err != nil {
		return nil, fmt.Errorf("pre-install: %w", err)
	}
	// Nothing is written on a boot that is not confirmed.
	if err := e.confirmFirst(rec); err != nil {
		return nil, err
	}
	// A fresh download dir before the state claims one, so no bitmap of an
	// earlier download can ever count for this one.
	if err := d.freshDir(); err != nil {
		return nil, err
	}
	rec.Bundle, rec.Target, rec.From, rec.Components = j.Bundle, j.Target, j.From, j.Components
	rec.Reason, rec.BootID, rec.Transitions, rec.Warnings = "", "", 0, nil
	rec.Offer, rec.Reboot = opts.Offer, opts.Reboot
	for _, it := range plan {
		if it.Kind == string(bundle.KindImage) {
			// The slot is about to be overwritten: its chunk index no longer holds.
			delete(rec.Chunks, it.Class+"/"+it.Slot)
		}
	}
	if err := e.save(rec, Downloading); err != nil {
		return nil, err
	}
	if err := d.open(rec, true); err != nil {
		return nil, err
	}
	return d, nil
}

// freshDir replaces the download dir with an empty one that holds the
// bundle's digest, durably.
func (d *Download) freshDir() error {
	if err := os.RemoveAll(d.dir); err != nil {
		return fmt.Errorf("prepare download: %w", err)
	}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return fmt.Errorf("prepare download: %w", err)
	}
	if err := writeFileSync(filepath.Join(d.dir, "digest"), []byte(d.info.Digest), 0o600); err != nil {
		return fmt.Errorf("prepare download: %w", err)
	}
	if err := syncDir(filepath.Dir(d.dir)); err != nil {
		return fmt.Errorf("prepare download: %w", err)
	}
	return nil
}

// open creates the sinks, loading the persisted bitmaps unless fresh.
func (d *Download) open(rec *Record, fresh bool) error {
	if !fresh {
		if b, err := os.ReadFile(filepath.Join(d.dir, "digest")); err != nil || string(b) != d.info.Digest {
			// The download dir is not this bundle's: start the chunks over.
			fresh = true
			if err := d.freshDir(); err != nil {
				return err
			}
		}
	}
	d.stats = DownloadStats{Bundle: d.info}
	for _, it := range d.plan {
		if it.Unchanged {
			continue // nothing to fetch: the installed copy stays
		}
		c := &d.m.Components[it.index]
		s := &sink{it: it, c: c, bits: make([]byte, (len(c.Chunks)+7)/8),
			bitsPath: filepath.Join(d.dir, strconv.Itoa(it.index)+".bits")}
		if !fresh {
			if b, err := os.ReadFile(s.bitsPath); err == nil && len(b) == len(s.bits) {
				copy(s.bits, b)
				for i := range c.Chunks {
					if s.done(i) {
						s.count++
					}
				}
			}
		}
		if err := d.openSink(s, rec); err != nil {
			d.Close()
			return err
		}
		d.sinks[it.index] = s
		d.stats.Chunks += len(c.Chunks)
		d.stats.Earlier += s.count
		if s.local != nil {
			d.stats.From = d.booted
		}
	}
	return nil
}

func (d *Download) openSink(s *sink, rec *Record) error {
	e := d.e
	if s.it.Kind != string(bundle.KindImage) {
		s.path = filepath.Join(d.dir, strconv.Itoa(s.it.index)+".part")
		f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("stage component %q: %w", s.it.Component, err)
		}
		s.f = f
		return nil
	}
	guard, err := slots.OpenTarget(s.it.slot, slots.TargetOptions{Booted: s.it.booted, Mountinfo: e.o.Slots.Paths.Mountinfo, Sys: e.o.Slots.Paths.Sys})
	if err != nil {
		return fmt.Errorf("open slot for component %q: %w", s.it.Component, err)
	}
	f, err := openSlotFile(s.it.Target, s.it.typ)
	if err != nil {
		guard.Close()
		return err
	}
	s.guard, s.f, s.path = guard, f, s.it.Target
	// Delta: chunks the active slot of the class holds, by hash.
	if ci, ok := rec.Chunks[s.it.Class+"/"+d.booted]; ok {
		if cl, err := e.o.Slots.Class(s.it.Class); err == nil {
			if active, err := cl.Slot(d.booted); err == nil {
				s.local = newLocalChunks(active.Device, ci)
			}
		}
	}
	return nil
}

func (s *sink) done(i int) bool { return s.bits[i/8]&(1<<(i%8)) != 0 }

// flush makes the written chunks durable, then the bitmap that claims them.
func (s *sink) flush() error {
	if s.dirty == 0 {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("sync component %q: %w", s.it.Component, err)
	}
	tmp := s.bitsPath + ".tmp"
	if err := writeFileSync(tmp, s.bits, 0o600); err != nil {
		return fmt.Errorf("save chunk bitmap: %w", err)
	}
	if err := os.Rename(tmp, s.bitsPath); err != nil {
		return fmt.Errorf("save chunk bitmap: %w", err)
	}
	s.dirty = 0
	return nil
}

// Bundle identifies the bundle being downloaded.
func (d *Download) Bundle() BundleInfo { return d.info }

// Manifest is the verified manifest.
func (d *Download) Manifest() *bundle.Manifest { return d.m }

// AlreadyInstalled reports that the bundle is the committed one: there is
// nothing to download.
func (d *Download) AlreadyInstalled() bool { return d.already }

// Resumed reports that the download continues one persisted earlier.
func (d *Download) Resumed() bool { return d.resumed }

// Components returns the manifest indexes of the components to fetch, in
// install order (unchanged components are left out: nothing to fetch).
func (d *Download) Components() []int {
	out := make([]int, 0, len(d.plan))
	for _, it := range d.plan {
		if !it.Unchanged {
			out = append(out, it.index)
		}
	}
	return out
}

// Sink is where the uncompressed bytes of component comp (manifest index)
// go, at each chunk's Offset.
func (d *Download) Sink(comp int) io.WriterAt {
	if s := d.sinks[comp]; s != nil {
		return s.f
	}
	return nil
}

// Local returns the chunks of the active slot that component comp may copy
// instead of downloading (delta), or nil. Its ReadChunk satisfies
// transport.Local.
func (d *Download) Local(comp int) interface {
	ReadChunk(sum, dst []byte) (bool, error)
} {
	if s := d.sinks[comp]; s != nil && s.local != nil {
		return s.local
	}
	return nil
}

// Count returns how many chunks of component comp are written, and its total.
func (d *Download) Count(comp int) (done, total int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.sinks[comp]; s != nil {
		return s.count, len(s.c.Chunks)
	}
	return 0, 0
}

// Done reports whether chunk idx of component comp is written and verified.
func (d *Download) Done(comp, idx int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sinks[comp]
	return s != nil && idx >= 0 && idx < len(s.c.Chunks) && s.done(idx)
}

// MarkDone records chunk idx of component comp as written. Every
// markFlushEvery chunks the sink is fsynced and then the bitmap persisted.
func (d *Download) MarkDone(comp, idx int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sinks[comp]
	if s == nil || idx < 0 || idx >= len(s.c.Chunks) {
		return fmt.Errorf("mark chunk %d of component %d: %w", idx, comp, bundle.ErrMalformed)
	}
	if s.done(idx) {
		return nil
	}
	s.bits[idx/8] |= 1 << (idx % 8)
	s.count++
	ch := &s.c.Chunks[idx]
	if s.local != nil && s.local.wasCopied(ch.SHA256) {
		d.stats.Copied++
		d.stats.CopiedBytes += uint64(ch.Length)
	} else {
		d.stats.Fetched++
		d.stats.FetchedBytes += uint64(ch.Length)
	}
	s.dirty++
	if s.dirty >= markFlushEvery {
		return s.flush()
	}
	return nil
}

// Sync persists the chunk bitmaps of all components (after fsyncing their
// data). Call it when a fetch ends, successfully or not.
func (d *Download) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, s := range d.sinks {
		errs = append(errs, s.flush())
	}
	return errors.Join(errs...)
}

// Close persists the bitmaps and releases the slot and staging files; the
// download stays persisted and resumes at the next Prepare of the bundle.
func (d *Download) Close() error {
	err := d.Sync()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.sinks {
		s.close()
	}
	return err
}

func (s *sink) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	if s.guard != nil {
		s.guard.Close()
		s.guard = nil
	}
	if s.local != nil {
		s.local.close()
	}
}

// Finish checks that every chunk is written, verifies every component
// whole (its sha256 read back from the slot or the staging file), unpacks
// packages and stages files, and continues as Install does after writing:
// state Written, post-install.d, then (unless NoAdvance) the bootloader
// try and the reboot the policy allows. A component that fails its check
// abandons the download (state abandoned, the reason recorded). The
// Download is closed in every case.
func (d *Download) Finish(ctx context.Context) (Outcome, error) {
	e := d.e
	out := Outcome{Bundle: d.info, Plan: d.plan}
	if d.already {
		out.Status = StatusAlreadyInstalled
		return out, nil
	}
	for _, it := range d.plan {
		if done, total := d.Count(it.index); done != total {
			d.Close()
			return out, fmt.Errorf("%w: component %q has %d of %d chunks", ErrIncomplete, it.Component, done, total)
		}
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return out, err
	}
	unlock, err := e.lock()
	if err != nil {
		d.Close()
		return out, err
	}
	defer unlock()
	rec, err := e.load()
	if err != nil {
		d.Close()
		return out, err
	}
	if rec.State != Downloading || rec.Bundle == nil || rec.Bundle.Digest != d.info.Digest {
		d.Close()
		return out, fmt.Errorf("%w: state %s", ErrNoDownload, rec.State)
	}
	out.State = rec.State
	stats := d.Stats()
	stats.Time = e.o.Now().UTC()
	e.log.Info("download finished", "bundle", d.info.Name, "version", d.info.Version, "chunks", stats.Chunks,
		"fetched", stats.Fetched, "fetched_bytes", stats.FetchedBytes, "copied", stats.Copied,
		"copied_bytes", stats.CopiedBytes, "from", stats.From, "earlier", stats.Earlier, "summary", stats.String())
	if err := e.saveDownloadStats(stats); err != nil {
		e.log.Warn("save download stats", "err", err)
	}
	j := journalOf(d.m, d.info, d.plan, d.booted, rec.SecurityVersion)
	j.Offer, j.Reboot = rec.Offer, rec.Reboot
	err = d.place(ctx, j)
	d.mu.Lock()
	for _, s := range d.sinks {
		s.close()
	}
	d.mu.Unlock()
	for _, p := range j.Components {
		if err == nil && e.isSelf(p) {
			err = e.selfCheck(ctx, p.Stage)
		}
	}
	if err != nil {
		if isPowerCut(err) || ctx.Err() != nil {
			return out, err
		}
		rec.Components = j.Components // what place staged, so it is removed
		if aerr := e.abandonDownload(rec, err.Error()); aerr != nil {
			return out, errors.Join(err, aerr)
		}
		out.State = Abandoned
		return out, err
	}
	return e.written(ctx, rec, j, d.m, d.plan, out, InstallOptions{NoAdvance: d.opts.NoAdvance}, func() error {
		return removeDir(d.dir)
	})
}

// place verifies each component whole and puts packages and files where
// Install would have written them.
func (d *Download) place(ctx context.Context, j *Record) error {
	e := d.e
	for k, it := range d.plan {
		if e.o.onWrite != nil {
			e.o.onWrite(it.Component)
		}
		prog := func(n uint64) {
			if d.opts.Progress != nil {
				d.opts.Progress(it.Component, n, it.Size)
			}
		}
		if it.Unchanged { // journalOf marked it written
			prog(it.Size)
			continue
		}
		s := d.sinks[it.index]
		c := s.c
		if it.Kind == string(bundle.KindImage) && it.typ == slots.TypeFile {
			if err := s.f.Truncate(int64(c.Size)); err != nil { // no old tail after a shorter image
				return fmt.Errorf("install component %q: %w", it.Component, err)
			}
			if err := s.f.Sync(); err != nil {
				return fmt.Errorf("install component %q: %w", it.Component, err)
			}
		}
		if err := readBack(ctx, s.path, c); err != nil {
			return fmt.Errorf("install component %q: %w", it.Component, err)
		}
		var err error
		switch c.Kind {
		case bundle.KindPackage, bundle.KindFile:
			f, oerr := os.Open(s.path)
			if oerr != nil {
				return fmt.Errorf("install component %q: %w", it.Component, oerr)
			}
			r := io.LimitReader(f, int64(c.Size))
			if c.Kind == bundle.KindPackage {
				err = e.writePackage(r, it, prog)
			} else {
				err = e.writeFile(r, it, &j.Components[k], prog)
			}
			f.Close()
		default:
			prog(it.Size)
		}
		if err != nil {
			return fmt.Errorf("install component %q: %w", it.Component, err)
		}
		j.Components[k].Written, j.Components[k].Done = it.Size, true
	}
	return nil
}

// readBack checks component c, staged at path, as read from the medium
// against its chunk table.
func readBack(ctx context.Context, path string, c *bundle.Component) error {
	rb, err := newReadBacker(ctx, path, c.Chunks)
	if err != nil {
		return err
	}
	return rb.finish(c.Size)
}

func removeDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove download: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

// abandonDownload ends a download: staged files and the download dir are
// removed and the reason recorded (state abandoned). Its target slot keeps
// no chunk index (Prepare dropped it).
func (e *Engine) abandonDownload(rec *Record, reason string) error {
	cleanStaged(rec.Components)
	if err := removeDir(filepath.Join(e.cfg.DataDir, downloadDirName)); err != nil {
		return err
	}
	if rec.Bundle != nil {
		rec.Last = &Result{State: Abandoned, Bundle: *rec.Bundle, Reason: reason, Time: e.o.Now().UTC()}
	}
	clearUpdate(rec)
	return e.save(rec, Abandoned)
}

// CancelDownload abandons the download under way (of offer, when not
// empty) with reason.
func (e *Engine) CancelDownload(offer, reason string) error {
	unlock, err := e.lock()
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := e.load()
	if err != nil {
		return err
	}
	if rec.State != Downloading || offer != "" && rec.Offer != offer {
		return ErrNoDownload
	}
	return e.abandonDownload(rec, reason)
}

// localChunks reads chunks from the active slot by their sha256 (delta) for
// one component, and remembers which it handed out, so MarkDone can tell
// that component's copied chunks from its fetched ones.
type localChunks struct {
	path  string
	spans map[[32]byte]ChunkSpan
	once  sync.Once
	f     *os.File
	err   error

	mu     sync.Mutex
	copied map[[32]byte]bool // hashes of the chunks ReadChunk returned
}

func newLocalChunks(path string, ci ChunkIndex) *localChunks {
	l := &localChunks{path: path, spans: map[[32]byte]ChunkSpan{}, copied: map[[32]byte]bool{}}
	for _, sp := range ci.Chunks {
		if len(sp.SHA256) == sha256.Size {
			l.spans[[32]byte(sp.SHA256)] = sp
		}
	}
	return l
}

// ReadChunk copies the chunk with this sha256 from the active slot into dst
// and checks its hash.
func (l *localChunks) ReadChunk(sum, dst []byte) (bool, error) {
	if len(sum) != sha256.Size {
		return false, nil
	}
	sp, ok := l.spans[[32]byte(sum)]
	if !ok || uint64(len(dst)) != uint64(sp.Length) {
		return false, nil
	}
	l.once.Do(func() { l.f, l.err = os.Open(l.path) })
	if l.err != nil {
		return false, fmt.Errorf("read active slot: %w", l.err)
	}
	if _, err := l.f.ReadAt(dst, int64(sp.Offset)); err != nil {
		return false, fmt.Errorf("read active slot %s at %d: %w", l.path, sp.Offset, err)
	}
	if got := sha256.Sum256(dst); !bytes.Equal(got[:], sum) {
		return false, nil
	}
	l.mu.Lock()
	l.copied[[32]byte(sum)] = true
	l.mu.Unlock()
	return true, nil
}

// wasCopied reports whether ReadChunk returned the chunk with this sha256.
func (l *localChunks) wasCopied(sum []byte) bool {
	if len(sum) != sha256.Size {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.copied[[32]byte(sum)]
}

func (l *localChunks) close() {
	if l.f != nil {
		l.f.Close()
	}
}

// saveDownloadStats keeps the stats of the last finished download for Status.
func (e *Engine) saveDownloadStats(s DownloadStats) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return slots.ReplaceFile(filepath.Join(e.cfg.DataDir, downloadStatsName), b, 0o600, nil)
}

// LastDownload reads the stats of the last finished download, nil if none
// (or unreadable). Status does not read them: it is called on every poll,
// the stats only by `autopatchd status`.
func (e *Engine) LastDownload() *DownloadStats {
	b, err := os.ReadFile(filepath.Join(e.cfg.DataDir, downloadStatsName))
	if err != nil {
		return nil
	}
	var s DownloadStats
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	return &s
}
