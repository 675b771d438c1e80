package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/autopatcher/autopatcher/slots"
)

// State is where the engine stands in the life of one update.
type State int

// The states, in the order an update normally passes through them.
const (
	Idle        State = iota // nothing under way
	Verifying                // reading and checking a bundle; nothing written yet
	Writing                  // writing components to the inactive slot, staging dirs and temp files
	Written                  // every component written, fsynced and verified
	TrySet                   // the bootloader will try the target slot once on the next boot
	Rebooting                // waiting for (or performing) the reboot into the target slot
	Trial                    // running the target slot on trial: health checks under a watchdog
	Committing               // checks passed; making the target primary and switching packages/files
	Committed                // the update is permanent
	Failed                   // the trial failed; the target is marked bad and the old slot is coming back
	RolledBack               // back on the old slot after a failed trial
	Abandoned                // an install stopped before the bootloader was touched and was cleaned up
	Downloading              // fetching the chunks of an offered bundle into the inactive slot and staging files
)

var stateNames = [...]string{
	Idle: "idle", Verifying: "verifying", Writing: "writing", Written: "written", TrySet: "try-set",
	Rebooting: "rebooting", Trial: "trial", Committing: "committing", Committed: "committed",
	Failed: "failed", RolledBack: "rolled-back", Abandoned: "abandoned", Downloading: "downloading",
}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(stateNames) {
		return nil, fmt.Errorf("marshal state: unknown state %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("unknown state %q", b)
}

// BundleInfo identifies a bundle.
type BundleInfo struct {
	Name            string `json:"name"`
	Version         string `json:"version"`
	SecurityVersion uint64 `json:"security_version"`
	Digest          string `json:"digest"` // hex sha256 of the signed manifest
}

// Progress is the install progress of one component.
type Progress struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Version string `json:"version"`
	Class   string `json:"class,omitempty"`    // slot class of an image
	Slot    string `json:"slot,omitempty"`     // boot name of the target slot of an image
	Target  string `json:"target"`             // device/file an image goes to, the package version dir, the file path
	Stage   string `json:"stage,omitempty"`    // temp file of a file component, renamed to Target at commit
	MadeDir string `json:"made_dir,omitempty"` // topmost directory the install created for Stage, removed if abandoned
	Link    string `json:"link,omitempty"`     // install path of a package: a symlink to its current version
	Size    uint64 `json:"size"`
	SHA256  string `json:"sha256"`
	Written uint64 `json:"written"`
	Done    bool   `json:"done"`
}

// Result is the outcome of the last update.
type Result struct {
	State    State      `json:"state"` // committed, rolled-back, abandoned or failed
	Bundle   BundleInfo `json:"bundle"`
	Reason   string     `json:"reason,omitempty"`
	Warnings []string   `json:"warnings,omitempty"` // hooks that failed (logged and reported, not fatal)
	Time     time.Time  `json:"time"`
}

// Record is everything the engine persists in state.json on the data dir.
type Record struct {
	Format      int         `json:"format"`
	State       State       `json:"state"`
	Bundle      *BundleInfo `json:"bundle,omitempty"`      // the bundle under way
	Target      string      `json:"target,omitempty"`      // boot name of the slot being installed, "" for a bundle without images
	From        string      `json:"from,omitempty"`        // boot name that was running when the install began
	BootID      string      `json:"boot_id,omitempty"`     // kernel boot id when the reboot was requested
	Reason      string      `json:"reason,omitempty"`      // why a trial failed
	Components  []Progress  `json:"components,omitempty"`  // in install (topological) order
	Warnings    []string    `json:"warnings,omitempty"`    // hooks that failed during the update under way
	Transitions int         `json:"transitions,omitempty"` // steps taken for the bundle under way
	Offer       string      `json:"offer,omitempty"`       // hub offer id of the bundle under way
	Reboot      *RebootPlan `json:"reboot,omitempty"`      // the offer's reboot policy, overriding reboot.policy

	SecurityVersion uint64                `json:"security_version"`    // anti-rollback counter: highest committed
	Installed       map[string]string     `json:"installed,omitempty"` // component name → committed version
	Current         *BundleInfo           `json:"current,omitempty"`   // last committed bundle
	Chunks          map[string]ChunkIndex `json:"chunks,omitempty"`    // "class/slot" → chunk table of what it holds
	Pending         map[string]ChunkIndex `json:"pending,omitempty"`   // chunk tables of the slots being installed
	Last            *Result               `json:"last,omitempty"`
	Updated         time.Time             `json:"updated"`
}

// RebootPlan is a reboot policy that came with an offer: RebootNow,
// RebootWindow (with a window in the syntax of reboot.window) or RebootHub.
type RebootPlan struct {
	Policy string `json:"policy"`
	Window string `json:"window,omitempty"`
}

// ChunkIndex is the chunk table of the image held by one slot, so that a
// later update can copy unchanged chunks from it instead of fetching them.
type ChunkIndex struct {
	Component string      `json:"component"`
	Version   string      `json:"version"`
	Size      uint64      `json:"size"`
	SHA256    string      `json:"sha256"`
	Chunks    []ChunkSpan `json:"chunks"`
}

// ChunkSpan is one chunk of a slot's content.
type ChunkSpan struct {
	Offset uint64 `json:"o"`
	Length uint32 `json:"l"`
	SHA256 []byte `json:"h"`
}

// recordFormat is the version of the state.json layout.
const recordFormat = 1

// Errors of the state store.
var (
	ErrCorruptState = errors.New("device: corrupt state file")
)

// Store keeps the Record in one JSON file, replaced atomically.
type Store struct {
	Dir  string
	Name string // file name; default state.json
	// crash, when set, is called around the rename and may stop the save
	// there (power-cut tests).
	crash func(point string) error
}

const stateFile = "state.json"

func (s *Store) name() string {
	if s.Name == "" {
		return stateFile
	}
	return s.Name
}

// Path returns the path of the state file.
func (s *Store) Path() string { return filepath.Join(s.Dir, s.name()) }

// Load reads the state file. A missing file is a fresh device (Idle). A file
// that does not parse returns an error wrapping ErrCorruptState; LoadPrevious
// then returns the copy kept from the save before.
func (s *Store) Load() (*Record, error) { return s.load(s.name()) }

// LoadPrevious reads the copy of the state file kept from the previous save.
func (s *Store) LoadPrevious() (*Record, error) { return s.load(s.name() + ".prev") }

// Exists reports whether the state file exists.
func (s *Store) Exists() bool {
	_, err := os.Lstat(s.Path())
	return err == nil
}

// Remove deletes the state file and its previous copy, durably.
func (s *Store) Remove() error {
	for _, n := range []string{s.name(), s.name() + ".prev", s.name() + ".tmp", s.name() + ".prev.tmp"} {
		if err := os.Remove(filepath.Join(s.Dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove state: %w", err)
		}
	}
	return syncDir(s.Dir)
}

func (s *Store) load(name string) (*Record, error) {
	p := filepath.Join(s.Dir, name)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) && name == s.name() {
		return &Record{Format: recordFormat, State: Idle}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	r := new(Record)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(r); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorruptState, p, err)
	}
	if r.Format != recordFormat {
		return nil, fmt.Errorf("%w: %s: format %d, want %d", ErrCorruptState, p, r.Format, recordFormat)
	}
	return r, nil
}

// Save writes r atomically: the old file kept as state.json.prev (hard
// link, or a copy where the file system has no hard links, as FAT), then
// slots.ReplaceFile: a temp file, fsync, rename over state.json, fsync of
// the dir and its file system.
func (s *Store) Save(r *Record) error {
	r.Format = recordFormat
	r.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	dst := s.Path()
	if _, err := s.load(s.name()); err == nil {
		prev := dst + ".prev"
		_ = os.Remove(prev)
		if err := keepPrevious(dst, prev); err != nil {
			return fmt.Errorf("keep previous state: %w", err)
		}
	}
	point := "save:" + s.name() + ":" + r.State.String()
	if err := slots.ReplaceFile(dst, b, 0o600, s.crashAfterWrite(point+":before-rename")); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return s.crashAt(point + ":after-rename")
}

// keepPrevious makes prev a copy of dst: a hard link, or where the file
// system refuses one (FAT: EPERM) a copy put in place by
// slots.ReplaceFile. A missing dst is no error.
func keepPrevious(dst, prev string) error {
	err := linkFile(dst, prev)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	b, rerr := os.ReadFile(dst)
	if errors.Is(rerr, os.ErrNotExist) {
		return nil
	}
	if rerr != nil {
		return errors.Join(err, rerr)
	}
	if werr := slots.ReplaceFile(prev, b, 0o600, nil); werr != nil {
		os.Remove(prev + ".tmp")
		return fmt.Errorf("copy after %v: %w", err, werr)
	}
	return nil
}

// linkFile is os.Link; tests replace it to act as a file system without
// hard links.
var linkFile = os.Link

func (s *Store) crashAt(point string) error {
	if s.crash == nil {
		return nil
	}
	return s.crash(point)
}

// crashAfterWrite is the wrap for slots.ReplaceFile that passes the crash
// point once the temp file is written, before its rename.
func (s *Store) crashAfterWrite(point string) func(io.Writer) io.Writer {
	if s.crash == nil {
		return nil
	}
	return func(w io.Writer) io.Writer { return crashWriter{w, func() error { return s.crash(point) }} }
}

// crashWriter writes to w, then calls crash.
type crashWriter struct {
	w     io.Writer
	crash func() error
}

func (c crashWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	if err == nil {
		err = c.crash()
	}
	return n, err
}

// writeFileSync writes b to path and fsyncs it before closing.
func writeFileSync(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir fsyncs a directory so that renames and creations in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
