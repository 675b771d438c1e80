package device

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ErrUnsafePath is wrapped when a package or file component names a path
// that would land outside its install root.
var ErrUnsafePath = errors.New("device: unsafe path in payload")

// Package directories: <packages>/<name>/<version>-<digest8>/ holds one
// unpacked version; <packages>/<name>/current and .../previous are symlinks
// to version dirs, switched by symlink + rename.
const (
	currentLink  = "current"
	previousLink = "previous"
	partialExt   = ".partial"
	stageExt     = ".ap-new"
)

// localName checks that p is a relative path that stays inside its root.
func localName(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || !filepath.IsLocal(filepath.FromSlash(p)) {
		return fmt.Errorf("%w: %q", ErrUnsafePath, p)
	}
	return nil
}

// unpack extracts the tar stream r into the new directory dst. It refuses
// absolute names, "..", device nodes and FIFOs, links whose target leaves
// dst, and writing through a symlink; the regular files' bytes may not
// exceed limit. Files and dst are fsynced.
func unpack(r io.Reader, dst string, limit uint64) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	var total uint64
	var dirs []string
	links := map[string]bool{} // symlinks made so far: nothing is written through them
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		name := strings.TrimSuffix(path.Clean(h.Name), "/")
		if name == "." && h.Typeflag == tar.TypeDir {
			continue
		}
		if err := localName(h.Name); err != nil {
			return fmt.Errorf("unpack entry: %w", err)
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if links[d] {
				return fmt.Errorf("unpack %s: %w: parent %s is a symlink", name, ErrUnsafePath, d)
			}
		}
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			if err := root.Chmod(name, mode|0o700); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			dirs = append(dirs, name)
		case tar.TypeReg:
			if h.Size < 0 || total+uint64(h.Size) > limit {
				return fmt.Errorf("unpack %s: %w: file of %d bytes exceeds the declared size %d", name, ErrShortPayload, h.Size, limit)
			}
			total += uint64(h.Size)
			if err := makeParent(root, name); err != nil {
				return err
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			_, err = io.CopyN(f, tr, h.Size)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
		case tar.TypeSymlink:
			target := h.Linkname
			if strings.HasPrefix(target, "/") || localName(path.Join(path.Dir(name), target)) != nil {
				return fmt.Errorf("unpack %s: %w: symlink to %q leaves the package", name, ErrUnsafePath, target)
			}
			if err := makeParent(root, name); err != nil {
				return err
			}
			if err := root.Symlink(target, name); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			links[name] = true
		case tar.TypeLink:
			if err := localName(h.Linkname); err != nil {
				return fmt.Errorf("unpack %s: hard link: %w", name, err)
			}
			fi, err := root.Lstat(path.Clean(h.Linkname))
			if err != nil || !fi.Mode().IsRegular() {
				return fmt.Errorf("unpack %s: %w: hard link to %q, not an earlier regular file", name, ErrUnsafePath, h.Linkname)
			}
			if err := makeParent(root, name); err != nil {
				return err
			}
			if err := root.Link(path.Clean(h.Linkname), name); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return fmt.Errorf("unpack %s: %w: device node or FIFO (type %q)", name, ErrUnsafePath, h.Typeflag)
		case tar.TypeXGlobalHeader:
		default:
			return fmt.Errorf("unpack %s: %w: unsupported entry type %q", name, ErrUnsafePath, h.Typeflag)
		}
	}
	// Whatever follows the tar end marker must be padding within the declared size.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	for _, d := range append(dirs, ".") {
		if f, err := root.Open(d); err == nil {
			f.Sync()
			f.Close()
		}
	}
	return nil
}

func makeParent(root *os.Root, name string) error {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("unpack %s: %w", name, err)
		}
	}
	return nil
}

// switchLink points link at target atomically: a temp symlink renamed over it.
func switchLink(link, target string) error {
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("switch %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("switch %s: %w", link, err)
	}
	return syncDir(filepath.Dir(link))
}

// commitPackage switches the package's current link to the version dir
// (keeping the old one as previous) and removes older versions.
func commitPackage(versionDir string) error {
	pkgDir := filepath.Dir(versionDir)
	cur := filepath.Join(pkgDir, currentLink)
	old, err := os.Readlink(cur)
	if err == nil && old == filepath.Base(versionDir) {
		return nil // already switched (resumed commit)
	}
	if _, err := os.Stat(versionDir); err != nil {
		return fmt.Errorf("commit package: %w", err)
	}
	if old != "" {
		if err := switchLink(filepath.Join(pkgDir, previousLink), old); err != nil {
			return err
		}
	}
	if err := switchLink(cur, filepath.Base(versionDir)); err != nil {
		return err
	}
	ents, err := os.ReadDir(pkgDir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() && n != filepath.Base(versionDir) && n != old {
			_ = os.RemoveAll(filepath.Join(pkgDir, n))
		}
	}
	return nil
}

// discardPackage removes a staged version dir unless it is current.
func discardPackage(versionDir string) {
	if versionDir == "" {
		return
	}
	cur, _ := os.Readlink(filepath.Join(filepath.Dir(versionDir), currentLink))
	if cur == filepath.Base(versionDir) {
		return
	}
	_ = os.RemoveAll(versionDir + partialExt)
	_ = os.RemoveAll(versionDir)
}

// commitFile renames a staged file over its target; done if already renamed.
func commitFile(stage, target string) error {
	if err := os.Rename(stage, target); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(target); serr == nil {
				return nil
			}
		}
		return fmt.Errorf("commit file: %w", err)
	}
	return syncDir(filepath.Dir(target))
}

// linkInstallPath makes a package's declared install path (/opt/app) a
// symlink to its current link in the packages dir, unless something that
// is not a symlink already lives there (then the error says so and the
// package stays reachable through the packages dir).
func linkInstallPath(path, current string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("link %s: %w", path, err)
		}
	case err != nil:
		return fmt.Errorf("link %s: %w", path, err)
	case fi.Mode()&os.ModeSymlink == 0:
		return fmt.Errorf("link %s: exists and is not a symlink; the package is at %s", path, current)
	default:
		if t, _ := os.Readlink(path); t == current {
			return nil
		}
	}
	return switchLink(path, current)
}
