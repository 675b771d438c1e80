package bundle

import (
	"fmt"

	"github.com/Masterminds/semver/v3"
)

// Validate checks the structure of a manifest with the default limits: known
// format version, kinds and compressions, unique component names, semver
// versions and constraints, and for every component a chunk table that
// covers [0, Size) contiguously with chunk and stored lengths within
// MaxChunk. A reader relies on these properties, so every decoded manifest is
// validated.
func (m *Manifest) Validate() error { return m.validate(Limits{}) }

func (m *Manifest) validate(lim Limits) error {
	lim = lim.withDefaults()
	if m.FormatVersion != FormatVersion {
		return fmt.Errorf("check manifest: format version %d, this reader supports %d: %w", m.FormatVersion, FormatVersion, ErrUnsupportedVersion)
	}
	if m.Name == "" {
		return fmt.Errorf("check manifest: empty bundle name: %w", ErrMalformed)
	}
	if _, err := semver.StrictNewVersion(m.Version); err != nil {
		return fmt.Errorf("check manifest: bundle version %q: %v: %w", m.Version, err, ErrMalformed)
	}
	switch m.Severity {
	case SeverityCritical, SeveritySecurity, SeverityNormal:
	default:
		return fmt.Errorf("check manifest: unknown severity %q: %w", m.Severity, ErrMalformed)
	}
	if m.Expires != 0 && m.Expires < m.Created {
		return fmt.Errorf("check manifest: expires before it was created: %w", ErrMalformed)
	}
	for _, d := range m.Requires {
		if err := d.check(); err != nil {
			return fmt.Errorf("check manifest: requires: %w", err)
		}
	}
	if len(m.Components) == 0 {
		return fmt.Errorf("check manifest: no components: %w", ErrMalformed)
	}
	if len(m.Components) > lim.MaxComponents {
		return fmt.Errorf("check manifest: %d components exceeds the limit of %d: %w", len(m.Components), lim.MaxComponents, ErrTooLarge)
	}
	seen := make(map[string]bool, len(m.Components))
	var total uint64
	for i := range m.Components {
		c := &m.Components[i]
		if seen[c.Name] {
			return fmt.Errorf("check manifest: duplicate component %q: %w", c.Name, ErrMalformed)
		}
		seen[c.Name] = true
		if err := c.validate(); err != nil {
			return fmt.Errorf("check manifest: %w", err)
		}
		total += c.Size
		if total > lim.MaxTotalSize || total < c.Size {
			return fmt.Errorf("check manifest: total size exceeds the limit of %d bytes at component %q: %w", lim.MaxTotalSize, c.Name, ErrTooLarge)
		}
	}
	if _, err := m.InstallOrder(); err != nil {
		return fmt.Errorf("check manifest: %w", err)
	}
	return nil
}

func (d Dependency) check() error {
	if d.Name == "" {
		return fmt.Errorf("dependency with empty name: %w", ErrMalformed)
	}
	if d.Constraint != "" {
		if _, err := semver.NewConstraint(d.Constraint); err != nil {
			return fmt.Errorf("dependency %q: constraint %q: %v: %w", d.Name, d.Constraint, err, ErrMalformed)
		}
	}
	return nil
}

func (c *Component) validate() error {
	if c.Name == "" {
		return fmt.Errorf("component with empty name: %w", ErrMalformed)
	}
	switch c.Kind {
	case KindImage:
		if c.Slot == "" {
			return fmt.Errorf("component %q: image without slot class: %w", c.Name, ErrMalformed)
		}
	case KindPackage, KindFile:
		if c.Path == "" {
			return fmt.Errorf("component %q: %s without install path: %w", c.Name, c.Kind, ErrMalformed)
		}
	default:
		return fmt.Errorf("component %q: unknown kind %q: %w", c.Name, c.Kind, ErrMalformed)
	}
	if _, err := semver.StrictNewVersion(c.Version); err != nil {
		return fmt.Errorf("component %q: version %q: %v: %w", c.Name, c.Version, err, ErrMalformed)
	}
	switch c.Compression {
	case CompressionNone, CompressionZstd:
	default:
		return fmt.Errorf("component %q: unknown compression %q: %w", c.Name, c.Compression, ErrMalformed)
	}
	if len(c.SHA256) != 32 {
		return fmt.Errorf("component %q: sha256 of %d bytes: %w", c.Name, len(c.SHA256), ErrMalformed)
	}
	for _, d := range c.Depends {
		if err := d.check(); err != nil {
			return fmt.Errorf("component %q: depends: %w", c.Name, err)
		}
		if d.Name == c.Name {
			return fmt.Errorf("component %q: depends on itself: %w", c.Name, ErrMalformed)
		}
	}
	if c.Size > uint64(len(c.Chunks))*MaxChunk {
		return fmt.Errorf("component %q: %d chunks cannot hold %d bytes: %w", c.Name, len(c.Chunks), c.Size, ErrMalformed)
	}
	var off uint64
	for i, ch := range c.Chunks {
		if ch.Offset != off {
			return fmt.Errorf("component %q chunk %d: offset %d, want %d (chunks must be contiguous): %w", c.Name, i, ch.Offset, off, ErrMalformed)
		}
		if ch.Length == 0 || ch.Length > MaxChunk {
			return fmt.Errorf("component %q chunk %d: length %d outside 1..%d: %w", c.Name, i, ch.Length, MaxChunk, ErrMalformed)
		}
		if ch.StoredLength == 0 || ch.StoredLength > ch.Length {
			return fmt.Errorf("component %q chunk %d: stored length %d outside 1..%d: %w", c.Name, i, ch.StoredLength, ch.Length, ErrMalformed)
		}
		if c.Compression == CompressionNone && ch.StoredLength != ch.Length {
			return fmt.Errorf("component %q chunk %d: uncompressed but stored length %d != length %d: %w", c.Name, i, ch.StoredLength, ch.Length, ErrMalformed)
		}
		if len(ch.SHA256) != 32 {
			return fmt.Errorf("component %q chunk %d: sha256 of %d bytes: %w", c.Name, i, len(ch.SHA256), ErrMalformed)
		}
		if compressed := ch.StoredLength != ch.Length; compressed && len(ch.StoredSHA256) != 32 || !compressed && ch.StoredSHA256 != nil {
			return fmt.Errorf("component %q chunk %d: stored sha256 of %d bytes (required exactly for compressed chunks): %w", c.Name, i, len(ch.StoredSHA256), ErrMalformed)
		}
		off += uint64(ch.Length)
	}
	if off != c.Size {
		return fmt.Errorf("component %q: chunks cover %d bytes, size is %d: %w", c.Name, off, c.Size, ErrMalformed)
	}
	return nil
}
