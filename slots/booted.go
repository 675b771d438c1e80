package slots

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrUnknownBooted means the running slot could not be determined.
var ErrUnknownBooted = errors.New("slots: cannot tell which slot is booted")

// Cmdline parameters naming the booted slot, in order of precedence.
const (
	ParamSlot     = "autopatcher.slot"
	ParamRAUCSlot = "rauc.slot"
	ParamRoot     = "root"
)

// ParseCmdline splits a kernel command line into parameters. Double quotes
// group words as the kernel does (`a="b c"` is one parameter, quotes
// removed); a later parameter of the same name wins.
func ParseCmdline(cmdline string) map[string]string {
	params := map[string]string{}
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		words = append(words, cur.String())
	}
	for _, w := range words {
		k, v, _ := strings.Cut(w, "=")
		params[k] = v
	}
	return params
}

// Booted returns the slot named on the kernel command line by
// autopatcher.slot= or rauc.slot=, without a config (no root= matching).
func Booted(cmdline string) (string, error) {
	p := ParseCmdline(cmdline)
	for _, k := range []string{ParamSlot, ParamRAUCSlot} {
		if v, ok := p[k]; ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("%w: no %s= or %s= in the kernel command line", ErrUnknownBooted, ParamSlot, ParamRAUCSlot)
}

// Booted returns the boot name of the running slot from cmdline:
// autopatcher.slot=, then rauc.slot= (both must name a slot of the config),
// then root= matched against the devices of every class. root= may be a
// path, or PARTUUID=, UUID=, PARTLABEL=, LABEL= resolved through the links
// under Paths.DevDisk (by-partuuid, by-uuid, by-partlabel, by-label).
func (c *Config) Booted(cmdline string) (string, error) {
	p := ParseCmdline(cmdline)
	for _, k := range []string{ParamSlot, ParamRAUCSlot} {
		v, ok := p[k]
		if !ok || v == "" {
			continue
		}
		for _, n := range c.BootNames() {
			if n == v {
				return v, nil
			}
		}
		return "", fmt.Errorf("%w: %s=%s is not a boot name of the slot config (%s)", ErrUnknownBooted, k, v, strings.Join(c.BootNames(), ", "))
	}
	root, ok := p[ParamRoot]
	if !ok || root == "" {
		return "", fmt.Errorf("%w: no %s=, %s= or root= in the kernel command line", ErrUnknownBooted, ParamSlot, ParamRAUCSlot)
	}
	dev, err := c.resolveRoot(root)
	if err != nil {
		return "", err
	}
	for _, name := range c.ClassNames() {
		cl := c.Classes[name]
		for _, s := range []*Slot{cl.A, cl.B} {
			if s.Type != TypeDir && sameDevice(dev, s.Device) {
				return s.BootName, nil
			}
		}
	}
	return "", fmt.Errorf("%w: root=%s matches no slot device", ErrUnknownBooted, root)
}

// ReadBooted reads Paths.Cmdline and returns the booted slot.
func (c *Config) ReadBooted() (string, error) {
	b, err := os.ReadFile(c.Paths.Cmdline)
	if err != nil {
		return "", fmt.Errorf("%w: read cmdline: %v", ErrUnknownBooted, err)
	}
	return c.Booted(string(b))
}

// Inactive returns the slot of class that is not running now.
func (c *Config) Inactive(class string) (*Slot, error) {
	cl, err := c.Class(class)
	if err != nil {
		return nil, err
	}
	booted, err := c.ReadBooted()
	if err != nil {
		return nil, err
	}
	return cl.Other(booted)
}

// Active returns the slot of class that is running now.
func (c *Config) Active(class string) (*Slot, error) {
	cl, err := c.Class(class)
	if err != nil {
		return nil, err
	}
	booted, err := c.ReadBooted()
	if err != nil {
		return nil, err
	}
	return cl.Slot(booted)
}

func (c *Config) resolveRoot(root string) (string, error) {
	links := map[string]string{
		"PARTUUID=":  "by-partuuid",
		"UUID=":      "by-uuid",
		"PARTLABEL=": "by-partlabel",
		"LABEL=":     "by-label",
	}
	for prefix, dir := range links {
		if !strings.HasPrefix(root, prefix) {
			continue
		}
		id := strings.TrimPrefix(root, prefix)
		if id == "" || strings.ContainsAny(id, "/") {
			return "", fmt.Errorf("%w: root=%s: unsupported form", ErrUnknownBooted, root)
		}
		for _, cand := range []string{id, strings.ToLower(id), strings.ToUpper(id)} {
			p := filepath.Join(c.Paths.DevDisk, dir, cand)
			if _, err := os.Lstat(p); err == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("%w: root=%s: no %s", ErrUnknownBooted, root, filepath.Join(c.Paths.DevDisk, dir, id))
	}
	return root, nil
}

// sameDevice reports whether two paths name the same device: equal after
// resolving links, or block devices with the same device number.
func sameDevice(a, b string) bool {
	if a == b {
		return true
	}
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	if errA != nil || errB != nil {
		return false
	}
	if ra == rb {
		return true
	}
	da, okA := blockDevNum(ra)
	db, okB := blockDevNum(rb)
	return okA && okB && da == db
}
