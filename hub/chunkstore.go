package hub

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Chunks is the on-disk chunk store: one file per distinct stored chunk under
// DIR/xx/KEY, where KEY is the hex sha256 of the uncompressed chunk plus a suffix
// for its stored encoding (".zst" for zstd, none when stored raw). Files are written to a
// temporary name and renamed, so a reader never sees a partial chunk, and a chunk shared
// by several bundles is stored once.
type Chunks struct {
	dir string
}

// OpenChunks opens (creating) a chunk store rooted at dir.
func OpenChunks(dir string) (*Chunks, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	return &Chunks{dir: dir}, nil
}

// ChunkKey builds the store key of a chunk from its uncompressed sha256 and its compression.
func ChunkKey(sum []byte, compression string) string {
	k := hex.EncodeToString(sum)
	if compression != "" && compression != "none" {
		k += "." + compression
	}
	return k
}

func validKey(key string) bool {
	h, suffix, _ := strings.Cut(key, ".")
	if len(h) != 64 {
		return false
	}
	if _, err := hex.DecodeString(h); err != nil {
		return false
	}
	for _, r := range suffix {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func (c *Chunks) path(key string) (string, error) {
	if !validKey(key) {
		return "", fmt.Errorf("chunk key %q: malformed", key)
	}
	return filepath.Join(c.dir, key[:2], key), nil
}

// Has reports whether key is stored.
func (c *Chunks) Has(key string) bool {
	p, err := c.path(key)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// Put stores data under key unless it is already there; it reports whether it wrote.
func (c *Chunks) Put(key string, data []byte) (bool, error) {
	p, err := c.path(key)
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(p); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return false, fmt.Errorf("store chunk %s: %w", key, err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := p + ".tmp-" + hex.EncodeToString(rnd[:])
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("store chunk %s: %w", key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("store chunk %s: %w", key, err)
	}
	return true, nil
}

// Get reads the stored bytes of key.
func (c *Chunks) Get(key string) ([]byte, error) {
	p, err := c.path(key)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chunk %s: %w", key, ErrNotFound)
	}
	return b, err
}

// Remove deletes key; a missing chunk is not an error.
func (c *Chunks) Remove(key string) error {
	p, err := c.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove chunk %s: %w", key, err)
	}
	return nil
}

// Keys lists the stored chunk keys (temporary files excluded).
func (c *Chunks) Keys() ([]string, error) {
	var keys []string
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && validKey(d.Name()) {
			keys = append(keys, d.Name())
		}
		return nil
	})
	return keys, err
}

// Usage returns the number of chunk files and their total size in bytes.
func (c *Chunks) Usage() (n int, bytes int64, err error) {
	err = filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.Contains(d.Name(), ".tmp-") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n++
		bytes += info.Size()
		return nil
	})
	return n, bytes, err
}
