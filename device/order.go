package device

import (
	"errors"
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/autopatcher/autopatcher/bundle"
)

// Errors of the checks made before anything is written.
var (
	ErrDependency      = errors.New("device: dependency not satisfied")
	ErrCycle           = errors.New("device: dependency cycle")
	ErrIncompatible    = errors.New("device: bundle not compatible with this hardware")
	ErrExpired         = errors.New("device: bundle expired")
	ErrSecurityVersion = errors.New("device: security version lower than the anti-rollback counter")
)

// order returns the indexes of m's components in install order: every
// component after the components of the bundle it depends on; among the
// ready ones, manifest order. A dependency on a component outside the bundle
// must be satisfied by installed; a cycle or an unsatisfied dependency is an
// error naming the components.
func order(m *bundle.Manifest, installed map[string]string) ([]int, error) {
	index := make(map[string]int, len(m.Components))
	for i, c := range m.Components {
		index[c.Name] = i
	}
	deps := make([][]int, len(m.Components)) // in-bundle dependencies of each component
	for i, c := range m.Components {
		for _, d := range c.Depends {
			if j, ok := index[d.Name]; ok {
				if err := satisfies(m.Components[j].Version, d); err != nil {
					return nil, fmt.Errorf("%w: component %q depends on %s: bundle has %s", ErrDependency, c.Name, depString(d), m.Components[j].Version)
				}
				deps[i] = append(deps[i], j)
				continue
			}
			v, ok := installed[d.Name]
			if !ok {
				return nil, fmt.Errorf("%w: component %q depends on %s, which is neither in the bundle nor installed", ErrDependency, c.Name, depString(d))
			}
			if err := satisfies(v, d); err != nil {
				return nil, fmt.Errorf("%w: component %q depends on %s, installed is %s", ErrDependency, c.Name, depString(d), v)
			}
		}
	}
	done := make([]bool, len(m.Components))
	out := make([]int, 0, len(m.Components))
	for len(out) < len(m.Components) {
		progressed := false
		for i := range m.Components {
			if done[i] {
				continue
			}
			ready := true
			for _, j := range deps[i] {
				ready = ready && done[j]
			}
			if ready {
				done[i] = true
				out = append(out, i)
				progressed = true
				break // restart from the top: earliest ready component first
			}
		}
		if !progressed {
			var left []string
			for i, c := range m.Components {
				if !done[i] {
					left = append(left, c.Name)
				}
			}
			return nil, fmt.Errorf("%w among components %s", ErrCycle, strings.Join(left, ", "))
		}
	}
	return out, nil
}

// checkRequires checks the bundle-level requirements against installed.
func checkRequires(m *bundle.Manifest, installed map[string]string) error {
	for _, d := range m.Requires {
		v, ok := installed[d.Name]
		if !ok {
			return fmt.Errorf("%w: bundle requires %s, which is not installed", ErrDependency, depString(d))
		}
		if err := satisfies(v, d); err != nil {
			return fmt.Errorf("%w: bundle requires %s, installed is %s", ErrDependency, depString(d), v)
		}
	}
	return nil
}

// satisfies reports whether version meets d's constraint.
func satisfies(version string, d bundle.Dependency) error {
	if d.Constraint == "" {
		return nil
	}
	c, err := semver.NewConstraint(d.Constraint)
	if err != nil {
		return fmt.Errorf("constraint %q: %v", d.Constraint, err)
	}
	v, err := semver.NewVersion(version)
	if err != nil {
		return fmt.Errorf("version %q: %v", version, err)
	}
	if !c.Check(v) {
		return fmt.Errorf("%s does not satisfy %s", version, d.Constraint)
	}
	return nil
}

func depString(d bundle.Dependency) string {
	if d.Constraint == "" {
		return d.Name
	}
	return fmt.Sprintf("%s %s", d.Name, d.Constraint)
}
