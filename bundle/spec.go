package bundle

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/Masterminds/semver/v3"
	"gopkg.in/yaml.v3"
)

// Spec describes a bundle to build: the YAML file given to `mkbundle build`.
// Every field, with its default:
//
//	name: app                  # required
//	version: 2.1.0             # required, semver
//	security_version: 7        # default 0; raise it to forbid rollback below this bundle
//	compatible: [rpi4, rpi5]   # hardware ids; default none (any hardware)
//	created: 2026-01-02T03:04:05Z  # RFC 3339; default $SOURCE_DATE_EPOCH, else the build time
//	expires: 2160h             # RFC 3339 time, or a duration after created; default never
//	severity: security         # critical | security | normal (default normal)
//	cves: [CVE-2026-0001]      # default none
//	description: text          # default empty
//	requires:                  # already installed on the device; default none
//	  - {name: bootloader, version: ">= 2023.1"}
//	components:                # at least one
//	  - name: rootfs           # required, unique
//	    kind: image            # image | package | file
//	    slot: rootfs           # slot class, images only
//	    path: /opt/app         # install path, packages and files only
//	    version: 2.1.0         # required, semver
//	    compression: zstd      # zstd (default) | none
//	    source: rootfs.ext4    # payload file, relative to the spec file
//	    depends:               # default none; each names a component of this bundle or one in requires
//	      - {name: firmware, version: ">= 1.0"}
type Spec struct {
	Name            string          `yaml:"name"`
	Version         string          `yaml:"version"`
	SecurityVersion uint64          `yaml:"security_version"`
	Compatible      []string        `yaml:"compatible"`
	Created         string          `yaml:"created"`
	Expires         string          `yaml:"expires"`
	Severity        Severity        `yaml:"severity"`
	CVEs            []string        `yaml:"cves"`
	Description     string          `yaml:"description"`
	Requires        []DependSpec    `yaml:"requires"`
	Components      []ComponentSpec `yaml:"components"`

	// Dir resolves relative Source paths (LoadSpec sets it to the spec
	// file's directory).
	Dir string `yaml:"-"`
}

// ComponentSpec is one component of a Spec.
type ComponentSpec struct {
	Name        string       `yaml:"name"`
	Kind        Kind         `yaml:"kind"`
	Slot        string       `yaml:"slot"`
	Path        string       `yaml:"path"`
	Version     string       `yaml:"version"`
	Compression Compression  `yaml:"compression"`
	Source      string       `yaml:"source"`
	Depends     []DependSpec `yaml:"depends"`
}

// DependSpec names a component and a semver constraint ("" = any version).
type DependSpec struct {
	Name    string `yaml:"name"`
	Version string `yaml:"version"`
}

// LoadSpec reads a YAML spec; unknown fields are errors.
func LoadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	s, err := ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("load spec %s: %w", path, err)
	}
	s.Dir = filepath.Dir(path)
	return s, nil
}

// ParseSpec decodes a YAML spec; unknown fields are errors.
func ParseSpec(b []byte) (*Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("parse spec: %w", err)
	}
	return &s, nil
}

// CreatedFromEnv returns the time in $SOURCE_DATE_EPOCH (Unix seconds), or
// ok=false when it is unset.
func CreatedFromEnv() (t time.Time, ok bool, err error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Time{}, false, nil
	}
	var sec int64
	if _, err := fmt.Sscan(v, &sec); err != nil {
		return time.Time{}, false, fmt.Errorf("SOURCE_DATE_EPOCH %q: not Unix seconds", v)
	}
	return time.Unix(sec, 0).UTC(), true, nil
}

// Manifest checks the spec and returns the manifest it describes, without
// sizes, hashes and chunk tables. now is the creation time used when the
// spec has none; it must not be zero in that case.
func (s *Spec) Manifest(now time.Time) (*Manifest, error) {
	if s.Name == "" {
		return nil, fmt.Errorf("check spec: name is empty")
	}
	if _, err := semver.StrictNewVersion(s.Version); err != nil {
		return nil, fmt.Errorf("check spec: version %q is not semver: %v", s.Version, err)
	}
	created := now
	if s.Created != "" {
		t, err := time.Parse(time.RFC3339, s.Created)
		if err != nil {
			return nil, fmt.Errorf("check spec: created %q: want RFC 3339 (2006-01-02T15:04:05Z)", s.Created)
		}
		created = t
	}
	if created.IsZero() {
		return nil, fmt.Errorf("check spec: no creation time (set created or SOURCE_DATE_EPOCH)")
	}
	var expires int64
	if s.Expires != "" {
		if t, err := time.Parse(time.RFC3339, s.Expires); err == nil {
			expires = t.Unix()
		} else if d, err := time.ParseDuration(s.Expires); err == nil && d > 0 {
			expires = created.Add(d).Unix()
		} else {
			return nil, fmt.Errorf("check spec: expires %q: want an RFC 3339 time or a positive duration such as 2160h", s.Expires)
		}
		if expires <= created.Unix() {
			return nil, fmt.Errorf("check spec: expires %s is not after created %s", s.Expires, created.Format(time.RFC3339))
		}
	}
	sev := s.Severity
	if sev == "" {
		sev = SeverityNormal
	}
	switch sev {
	case SeverityCritical, SeveritySecurity, SeverityNormal:
	default:
		return nil, fmt.Errorf("check spec: severity %q: want critical, security or normal", s.Severity)
	}
	m := &Manifest{
		FormatVersion:   FormatVersion,
		Name:            s.Name,
		Version:         s.Version,
		SecurityVersion: s.SecurityVersion,
		Compatible:      nonNil(s.Compatible),
		Created:         created.Unix(),
		Expires:         expires,
		Severity:        sev,
		CVEs:            s.CVEs,
		Description:     s.Description,
	}
	required := map[string]bool{}
	for _, d := range s.Requires {
		dep, err := d.dependency()
		if err != nil {
			return nil, fmt.Errorf("check spec: requires: %w", err)
		}
		required[d.Name] = true
		m.Requires = append(m.Requires, dep)
	}
	if len(s.Components) == 0 {
		return nil, fmt.Errorf("check spec: no components")
	}
	if len(s.Components) > DefaultMaxComponents {
		return nil, fmt.Errorf("check spec: %d components, at most %d", len(s.Components), DefaultMaxComponents)
	}
	versions := map[string]*semver.Version{}
	for _, c := range s.Components {
		if c.Name == "" {
			return nil, fmt.Errorf("check spec: a component has no name")
		}
		if _, dup := versions[c.Name]; dup {
			return nil, fmt.Errorf("check spec: duplicate component %q", c.Name)
		}
		v, err := semver.StrictNewVersion(c.Version)
		if err != nil {
			return nil, fmt.Errorf("check spec: component %q: version %q is not semver: %v", c.Name, c.Version, err)
		}
		versions[c.Name] = v
	}
	for _, c := range s.Components {
		comp := Component{
			Name: c.Name, Kind: c.Kind, Slot: c.Slot, Path: c.Path, Version: c.Version,
			Compression: c.Compression,
		}
		if comp.Compression == "" {
			comp.Compression = CompressionZstd
		}
		switch c.Kind {
		case KindImage:
			if c.Slot == "" || c.Path != "" {
				return nil, fmt.Errorf("check spec: component %q: an image needs a slot class and no path", c.Name)
			}
		case KindPackage, KindFile:
			if c.Path == "" || c.Slot != "" {
				return nil, fmt.Errorf("check spec: component %q: a %s needs an install path and no slot", c.Name, c.Kind)
			}
		default:
			return nil, fmt.Errorf("check spec: component %q: kind %q: want image, package or file", c.Name, c.Kind)
		}
		if comp.Compression != CompressionNone && comp.Compression != CompressionZstd {
			return nil, fmt.Errorf("check spec: component %q: compression %q: want zstd or none", c.Name, c.Compression)
		}
		if c.Source == "" {
			return nil, fmt.Errorf("check spec: component %q: no source file", c.Name)
		}
		for _, d := range c.Depends {
			dep, err := d.dependency()
			if err != nil {
				return nil, fmt.Errorf("check spec: component %q: depends: %w", c.Name, err)
			}
			v, inBundle := versions[d.Name]
			switch {
			case d.Name == c.Name:
				return nil, fmt.Errorf("check spec: component %q depends on itself", c.Name)
			case inBundle && d.Version != "":
				cons, _ := semver.NewConstraint(d.Version)
				if !cons.Check(v) {
					return nil, fmt.Errorf("check spec: component %q depends on %s %s, but the bundle carries %s %s", c.Name, d.Name, d.Version, d.Name, v)
				}
			case !inBundle && !required[d.Name]:
				return nil, fmt.Errorf("check spec: component %q depends on unknown %q (neither a component of this bundle nor listed in requires)", c.Name, d.Name)
			}
			comp.Depends = append(comp.Depends, dep)
		}
		m.Components = append(m.Components, comp)
	}
	if _, err := m.InstallOrder(); err != nil {
		return nil, fmt.Errorf("check spec: %w", err)
	}
	return m, nil
}

func (d DependSpec) dependency() (Dependency, error) {
	if d.Name == "" {
		return Dependency{}, fmt.Errorf("dependency without a name")
	}
	if d.Version != "" {
		if _, err := semver.NewConstraint(d.Version); err != nil {
			return Dependency{}, fmt.Errorf("%q: bad version constraint %q: %v", d.Name, d.Version, err)
		}
	}
	return Dependency{Name: d.Name, Constraint: d.Version}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// BuildSpec builds the bundle a spec describes, reading each component's
// source file, and returns its manifest. now is the creation time used when
// the spec has none (see CreatedFromEnv).
func BuildSpec(ctx context.Context, w io.Writer, s *Spec, now time.Time, keys []crypto.Signer, opts BuildOptions) (*Manifest, error) {
	m, err := s.Manifest(now)
	if err != nil {
		return nil, err
	}
	var payloads []io.Reader
	for _, c := range s.Components {
		f, err := os.Open(s.sourcePath(c))
		if err != nil {
			return nil, fmt.Errorf("build component %q: %w", c.Name, err)
		}
		defer f.Close()
		payloads = append(payloads, f)
	}
	if err := Build(ctx, w, m, payloads, keys, opts); err != nil {
		return nil, err
	}
	return m, nil
}

// SourceSize is the total size of the spec's source files, for progress.
func (s *Spec) SourceSize() int64 {
	var n int64
	for _, c := range s.Components {
		if fi, err := os.Stat(s.sourcePath(c)); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// sourcePath resolves a component's Source against the spec's Dir.
func (s *Spec) sourcePath(c ComponentSpec) string {
	if filepath.IsAbs(c.Source) || s.Dir == "" {
		return c.Source
	}
	return filepath.Join(s.Dir, c.Source)
}
