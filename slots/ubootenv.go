package slots

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// U-Boot environment errors.
var (
	ErrNoValidEnv  = errors.New("slots: no U-Boot environment copy has a valid CRC")
	ErrEnvSize     = errors.New("slots: U-Boot environment size does not match fw_env.config")
	ErrEnvTooLarge = errors.New("slots: variables do not fit the U-Boot environment")
	ErrEnvVar      = errors.New("slots: invalid U-Boot variable")
	ErrEnvConfig   = errors.New("slots: invalid fw_env.config")
	ErrEnvDevice   = errors.New("slots: U-Boot environment device missing")
)

// DefaultEnvLock is the lock file fw_printenv and fw_setenv take; EnvStore
// takes it too so they never interleave.
const DefaultEnvLock = "/var/lock/fw_printenv.lock"

// EnvCopy is one line of fw_env.config: where one copy of the env lives.
type EnvCopy struct {
	Device     string
	Offset     int64 // byte offset of the copy on Device
	Size       int64 // env size: CRC, flags (redundant only) and data
	SectorSize int64 // erase size (0 if not given); informational for files
	Sectors    int64 // number of sectors (0 if not given)
}

// ParseFwEnvConfig parses the fw_env.config format as libubootenv reads
// it: lines "device offset size [sector-size [sectors]]"; '#' at the start
// of a line comments it out, and lines with fewer than three fields are
// skipped. The offset is a C integer (0x hex, 0 octal, decimal); the env
// size, sector size and sector count are always hex, with or without 0x
// ("4000" is 0x4000). One line is a single env, two lines a redundant one.
func ParseFwEnvConfig(b []byte) ([]EnvCopy, error) {
	var copies []EnvCopy
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		c := EnvCopy{Device: f[0]}
		var err error
		if c.Offset, err = strconv.ParseInt(f[1], 0, 64); err != nil || c.Offset < 0 {
			return nil, fmt.Errorf("%w: line %d: offset %q", ErrEnvConfig, n, f[1])
		}
		hex := func(s string) (int64, error) {
			s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
			return strconv.ParseInt(s, 16, 64)
		}
		if c.Size, err = hex(f[2]); err != nil || c.Size <= 0 {
			return nil, fmt.Errorf("%w: line %d: env size %q (hex)", ErrEnvConfig, n, f[2])
		}
		if len(f) > 3 {
			if c.SectorSize, err = hex(f[3]); err != nil {
				return nil, fmt.Errorf("%w: line %d: sector size %q (hex)", ErrEnvConfig, n, f[3])
			}
		}
		if len(f) > 4 {
			if c.Sectors, err = hex(f[4]); err != nil {
				return nil, fmt.Errorf("%w: line %d: sector count %q (hex)", ErrEnvConfig, n, f[4])
			}
		}
		if c.Size < 8 || c.Size > 16<<20 {
			return nil, fmt.Errorf("%w: line %d: env size 0x%x out of range", ErrEnvConfig, n, c.Size)
		}
		copies = append(copies, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvConfig, err)
	}
	switch {
	case len(copies) == 0:
		return nil, fmt.Errorf("%w: no env location", ErrEnvConfig)
	case len(copies) > 2:
		return nil, fmt.Errorf("%w: %d env locations, at most 2", ErrEnvConfig, len(copies))
	case len(copies) == 2 && copies[0].Size != copies[1].Size:
		return nil, fmt.Errorf("%w: env sizes differ (0x%x, 0x%x)", ErrEnvConfig, copies[0].Size, copies[1].Size)
	}
	return copies, nil
}

// LoadFwEnvConfig reads and parses an fw_env.config file.
func LoadFwEnvConfig(path string) ([]EnvCopy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read fw_env.config: %w", err)
	}
	c, err := ParseFwEnvConfig(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return c, nil
}

// Env is a U-Boot environment: variable name to value.
type Env map[string]string

// checkVar enforces what U-Boot and fw_setenv accept.
func checkVar(name, value string) error {
	if name == "" || strings.ContainsAny(name, "=\x00") {
		return fmt.Errorf("%w: name %q", ErrEnvVar, name)
	}
	if strings.Contains(value, "\x00") {
		return fmt.Errorf("%w: value of %s contains NUL", ErrEnvVar, name)
	}
	return nil
}

// headerLen is the size of CRC (+ flags) before the data area.
func headerLen(redundant bool) int {
	if redundant {
		return 5
	}
	return 4
}

// EncodeEnv lays out one copy of size bytes: CRC-32 (IEEE, little-endian)
// of the data area, the flags byte if redundant, then "name=value\0" in
// byte order of the names, a final "\0", and 0x00 padding to size.
func EncodeEnv(env Env, size int, redundant bool, flags byte) ([]byte, error) {
	hl := headerLen(redundant)
	if size <= hl+2 {
		return nil, fmt.Errorf("%w: env size %d", ErrEnvTooLarge, size)
	}
	names := make([]string, 0, len(env))
	need := hl + 1
	for k, v := range env {
		if err := checkVar(k, v); err != nil {
			return nil, err
		}
		names = append(names, k)
		need += len(k) + len(v) + 2
	}
	if need > size {
		return nil, fmt.Errorf("%w: %d bytes needed, env size %d", ErrEnvTooLarge, need, size)
	}
	sort.Strings(names)
	out := make([]byte, size)
	p := hl
	for _, k := range names {
		p += copy(out[p:], k)
		out[p] = '='
		p++
		p += copy(out[p:], env[k])
		p++ // NUL
	}
	// out[p] is the terminating NUL; the rest is zero padding.
	if redundant {
		out[4] = flags
	}
	binary.LittleEndian.PutUint32(out, crc32.ChecksumIEEE(out[hl:]))
	return out, nil
}

// DecodeEnv checks the CRC of one copy and decodes its variables. It
// returns ErrNoValidEnv on a CRC mismatch. Entries without '=' are skipped
// and a later duplicate wins, as in libubootenv.
func DecodeEnv(b []byte, redundant bool) (Env, byte, error) {
	hl := headerLen(redundant)
	if len(b) <= hl {
		return nil, 0, fmt.Errorf("%w: %d bytes", ErrNoValidEnv, len(b))
	}
	data := b[hl:]
	if crc32.ChecksumIEEE(data) != binary.LittleEndian.Uint32(b) {
		return nil, 0, ErrNoValidEnv
	}
	var flags byte
	if redundant {
		flags = b[4]
	}
	env := Env{}
	for p := 0; p < len(data) && data[p] != 0; {
		end := bytes.IndexByte(data[p:], 0)
		if end < 0 {
			return nil, 0, fmt.Errorf("%w: last variable not terminated", ErrNoValidEnv)
		}
		entry := string(data[p : p+end])
		p += end + 1
		if k, v, ok := strings.Cut(entry, "="); ok && k != "" {
			env[k] = v
		}
	}
	return env, flags, nil
}

// liveCopy applies the redundant-env rules to the CRC results and flags:
// only one valid → that one; both: 255 vs 0 → the 0 one, else the larger
// flags, equal → the first. -1 if neither is valid.
func liveCopy(valid [2]bool, flags [2]byte) int {
	switch {
	case valid[0] && !valid[1]:
		return 0
	case !valid[0] && valid[1]:
		return 1
	case !valid[0] && !valid[1]:
		return -1
	}
	switch {
	case flags[0] == 0xFF && flags[1] == 0:
		return 1
	case flags[1] == 0xFF && flags[0] == 0:
		return 0
	case flags[1] > flags[0]:
		return 1
	}
	return 0
}

// EnvStore reads and writes a U-Boot environment in one of three layouts:
//
//   - single: one fw_env.config line, one copy (CRC + data).
//   - redundant: two lines, two copies (CRC + flags + data).
//   - mirror: one line (the primary file) plus a Mirror file, two
//     single-layout files as written by the armv7 boot script.
type EnvStore struct {
	Copies []EnvCopy
	Mirror string // second file of the mirror layout; "" = off
	Lock   string // flock(2) file shared with fw_setenv; "" = no lock
	fs     envFS
}

// NewEnvStore checks the layout and returns a store on the real files.
func NewEnvStore(copies []EnvCopy, mirror string) (*EnvStore, error) {
	if len(copies) < 1 || len(copies) > 2 {
		return nil, fmt.Errorf("%w: %d env locations", ErrEnvConfig, len(copies))
	}
	if mirror != "" {
		if len(copies) != 1 {
			return nil, fmt.Errorf("%w: mirror mode needs one fw_env.config line, got %d", ErrEnvConfig, len(copies))
		}
		if copies[0].Offset != 0 {
			return nil, fmt.Errorf("%w: mirror mode needs offset 0 (whole files)", ErrEnvConfig)
		}
	}
	return &EnvStore{Copies: copies, Mirror: mirror, Lock: DefaultEnvLock, fs: osFS{}}, nil
}

// OpenEnvStore loads fw_env.config and returns the store.
func OpenEnvStore(fwEnvConfig, mirror string) (*EnvStore, error) {
	copies, err := LoadFwEnvConfig(fwEnvConfig)
	if err != nil {
		return nil, err
	}
	return NewEnvStore(copies, mirror)
}

// copyLoc describes where each copy is and how it is laid out.
type copyLoc struct {
	EnvCopy
	redundant bool // has the flags byte
	optional  bool // a missing or short copy is just invalid (mirror mode)
}

func (s *EnvStore) locs() []copyLoc {
	if s.Mirror != "" {
		m := s.Copies[0]
		m.Device = s.Mirror
		return []copyLoc{{s.Copies[0], false, true}, {m, false, true}}
	}
	if len(s.Copies) == 2 {
		return []copyLoc{{s.Copies[0], true, false}, {s.Copies[1], true, false}}
	}
	return []copyLoc{{s.Copies[0], false, false}}
}

// envState is what Read learned: the env and which copy it came from.
type envState struct {
	env   Env
	live  int
	flags [2]byte
}

// Read returns the live environment. With no valid copy it returns
// ErrNoValidEnv (and the caller must not write: U-Boot itself would use
// its built-in default environment, which Linux cannot know).
func (s *EnvStore) Read() (Env, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := s.read()
	if err != nil {
		return nil, err
	}
	return st.env, nil
}

func (s *EnvStore) read() (*envState, error) {
	locs := s.locs()
	var valid [2]bool
	var flags [2]byte
	var envs [2]Env
	var hints []string
	for i, l := range locs {
		b, err := s.fs.ReadAt(l.Device, l.Offset, l.Size)
		if err != nil {
			if l.optional {
				hints = append(hints, err.Error())
				continue
			}
			return nil, err
		}
		env, fl, err := DecodeEnv(b, l.redundant)
		if err != nil {
			if h := s.sizeHint(l); h != nil {
				hints = append(hints, h.Error())
			}
			continue
		}
		valid[i], flags[i], envs[i] = true, fl, env
	}
	live := 0
	if len(locs) == 2 {
		if s.Mirror != "" {
			// Primary if valid, else the mirror; flags are not used.
			live = -1
			if valid[0] {
				live = 0
			} else if valid[1] {
				live = 1
			}
		} else {
			live = liveCopy(valid, flags)
		}
	} else if !valid[0] {
		live = -1
	}
	if live < 0 {
		var names []string
		for _, l := range locs {
			names = append(names, fmt.Sprintf("%s@0x%x", l.Device, l.Offset))
		}
		msg := strings.Join(names, ", ")
		if len(hints) > 0 {
			msg += ": " + strings.Join(hints, "; ")
		}
		return nil, fmt.Errorf("read U-Boot env: %w (%s)", ErrNoValidEnv, msg)
	}
	return &envState{env: envs[live], live: live, flags: flags}, nil
}

// sizeHint explains a bad CRC when the copy's file holds a valid env of
// another size than fw_env.config says (the classic location/size
// disagreement between U-Boot and Linux).
func (s *EnvStore) sizeHint(l copyLoc) error {
	size, regular, err := s.fs.Stat(l.Device)
	if err != nil || !regular || size-l.Offset == l.Size || size-l.Offset <= 8 || size-l.Offset > 16<<20 {
		return nil
	}
	b, err := s.fs.ReadAt(l.Device, l.Offset, size-l.Offset)
	if err != nil {
		return nil
	}
	if _, _, err := DecodeEnv(b, l.redundant); err == nil {
		return fmt.Errorf("%w: %s holds a valid env of size 0x%x, fw_env.config says 0x%x", ErrEnvSize, l.Device, size-l.Offset, l.Size)
	}
	return nil
}

// Update reads the live env, lets fn change it, and writes the result in
// one write. Nothing is written if the env cannot be read (ErrNoValidEnv),
// if fn fails, or if fn changed nothing.
//
// Redundant: the other copy is written in place with flags+1 and fsynced;
// the live copy is untouched, so a torn write leaves it live. Mirror: the
// new env goes to the mirror file first, then to the primary, each as a
// temporary file, fsync, rename, fsync of the directory. Single: a regular
// file holding exactly the env is replaced the same way; otherwise (a
// device, or an env inside a larger file) it is written in place, which is
// not power-safe — use a redundant env there.
func (s *EnvStore) Update(fn func(Env) error) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.read()
	if err != nil {
		return err
	}
	env := maps.Clone(st.env)
	if err := fn(env); err != nil {
		return err
	}
	if maps.Equal(env, st.env) {
		return nil
	}
	return s.write(env, st)
}

func (s *EnvStore) write(env Env, st *envState) error {
	locs := s.locs()
	size := int(locs[0].Size)
	switch {
	case s.Mirror != "":
		b, err := EncodeEnv(env, size, false, 0)
		if err != nil {
			return err
		}
		for _, i := range []int{1, 0} {
			if err := s.fs.Replace(locs[i].Device, b); err != nil {
				return fmt.Errorf("write U-Boot env: %w", err)
			}
		}
		return nil
	case len(locs) == 2:
		other := 1 - st.live
		b, err := EncodeEnv(env, size, true, st.flags[st.live]+1)
		if err != nil {
			return err
		}
		if err := s.fs.WriteAt(locs[other].Device, locs[other].Offset, b); err != nil {
			return fmt.Errorf("write U-Boot env: %w", err)
		}
		return nil
	}
	b, err := EncodeEnv(env, size, false, 0)
	if err != nil {
		return err
	}
	l := locs[0]
	if fsize, regular, err := s.fs.Stat(l.Device); err == nil && regular && l.Offset == 0 && fsize == l.Size {
		err = s.fs.Replace(l.Device, b)
		if err != nil {
			return fmt.Errorf("write U-Boot env: %w", err)
		}
		return nil
	}
	if err := s.fs.WriteAt(l.Device, l.Offset, b); err != nil {
		return fmt.Errorf("write U-Boot env: %w", err)
	}
	return nil
}

func (s *EnvStore) lock() (func(), error) {
	if s.Lock == "" {
		return func() {}, nil
	}
	f, err := os.OpenFile(s.Lock, os.O_WRONLY|os.O_CREATE, 0o666)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return func() {}, nil // no lock directory: nobody else to exclude
		}
		return nil, fmt.Errorf("lock U-Boot env: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock U-Boot env: %w", err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// envFS is the storage under EnvStore; tests replace it to cut writes.
type envFS interface {
	ReadAt(path string, off, n int64) ([]byte, error)
	WriteAt(path string, off int64, b []byte) error // in place, then fsync
	Replace(path string, b []byte) error            // temp, fsync, rename, fsync dir
	Stat(path string) (size int64, regular bool, err error)
}

type osFS struct{}

func (osFS) ReadAt(path string, off, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %v", ErrEnvDevice, err)
		}
		return nil, fmt.Errorf("read U-Boot env: %w", err)
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := f.ReadAt(b, off)
	if int64(m) < n {
		if err == io.EOF || err == nil {
			return nil, fmt.Errorf("%w: %s ends at 0x%x, fw_env.config wants 0x%x bytes at 0x%x", ErrEnvSize, path, off+int64(m), n, off)
		}
		return nil, fmt.Errorf("read U-Boot env %s: %w", path, err)
	}
	return b, nil
}

func (osFS) WriteAt(path string, off int64, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (osFS) Replace(path string, b []byte) error {
	return ReplaceFile(path, b, 0o644, nil)
}

func (osFS) Stat(path string) (int64, bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false, err
	}
	return fi.Size(), fi.Mode().IsRegular(), nil
}
