package bundle

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Versions and constraints, as written in manifests and specs.
//
// A version is Semantic Versioning 2.0.0: MAJOR.MINOR.PATCH, an optional
// pre-release ("-rc.1") and optional build metadata ("+build.5", which
// takes no part in precedence). ParseVersion accepts exactly that;
// ParseLooseVersion also accepts a leading "v", leading zeros and a missing
// minor or patch ("2023.1" is 2023.1.0), for versions a device is told about
// in its configuration.
//
// A constraint is one or more groups separated by "||", any of which may
// match; a group is terms separated by commas or spaces, all of which must
// match. A term is an operator and a loose version whose minor and patch may
// be missing or a wildcard (x, X, *):
//
//	1.2.3, =1.2.3   equal; with wildcards, like ~ (1.2 is 1.2.x)
//	!= 1.2          not equal; 1.2 excludes all of 1.2.x
//	> 1.2, >= 1.2   greater; > 1.2 means > 1.2.x, > 1 means > 1.x.x
//	< 1.2, <= 1.2   less; <= 1.2 means <= 1.2.x, <= 1 means <= 1.x.x
//	~1.2.3, ~>1.2.3 >= 1.2.3, < 1.3.0 (~1 is >= 1.0.0, < 2.0.0)
//	^1.2.3          >= 1.2.3, < 2.0.0; ^0.2.3 is < 0.3.0; ^0.0.3 is 0.0.3
//	1.2 - 1.4.5     >= 1.2, <= 1.4.5 (spaces around the dash)
//
// A pre-release version matches a group only if one of the group's terms
// names a pre-release itself (">= 2.0.0-rc.1"), and is then compared by
// precedence. The grammar and its meaning are those bundles of format
// version 1 were built with; they are part of the format.

// Version limits: longer strings are rejected before parsing.
const (
	maxVersionLen     = 256
	maxConstraintLen  = 512
	maxConstraintOrs  = 32
	versionIdentChars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"
)

var errVersionSyntax = errors.New("not MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]")

// Version is a parsed semantic version.
type Version struct {
	Major, Minor, Patch uint64
	Pre                 string // pre-release identifiers joined by dots; "" for a release
	Build               string // build metadata; ignored by Compare
}

// ParseVersion parses a strict Semantic Versioning 2.0.0 version.
func ParseVersion(s string) (Version, error) {
	v, err := parseVersion(s, false)
	if err != nil {
		return Version{}, fmt.Errorf("parse version %q: %w", s, err)
	}
	return v, nil
}

// ParseLooseVersion parses a version that may start with "v", have leading
// zeros or lack its minor or patch number (which are then 0).
func ParseLooseVersion(s string) (Version, error) {
	v, err := parseVersion(s, true)
	if err != nil {
		return Version{}, fmt.Errorf("parse version %q: %w", s, err)
	}
	return v, nil
}

func parseVersion(s string, loose bool) (Version, error) {
	if len(s) > maxVersionLen {
		return Version{}, fmt.Errorf("longer than %d bytes", maxVersionLen)
	}
	var v Version
	var err error
	core, build, hasBuild := strings.Cut(s, "+")
	if hasBuild {
		if err := checkIdents(build, false); err != nil {
			return Version{}, fmt.Errorf("build metadata %q: %w", build, err)
		}
		v.Build = build
	}
	core, pre, hasPre := strings.Cut(core, "-")
	if hasPre {
		if err := checkIdents(pre, true); err != nil {
			return Version{}, fmt.Errorf("pre-release %q: %w", pre, err)
		}
		v.Pre = pre
	}
	if loose {
		core = strings.TrimPrefix(core, "v")
	}
	nums := strings.Split(core, ".")
	if len(nums) > 3 || (!loose && len(nums) != 3) {
		return Version{}, errVersionSyntax
	}
	dst := []*uint64{&v.Major, &v.Minor, &v.Patch}
	for i, n := range nums {
		if *dst[i], err = parseNumber(n, loose); err != nil {
			return Version{}, err
		}
	}
	return v, nil
}

// parseNumber parses a major, minor or patch number.
func parseNumber(n string, leadingZeros bool) (uint64, error) {
	if n == "" || strings.Trim(n, "0123456789") != "" {
		return 0, errVersionSyntax
	}
	if len(n) > 1 && n[0] == '0' && !leadingZeros {
		return 0, fmt.Errorf("number %q has a leading zero", n)
	}
	u, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number %q out of range", n)
	}
	return u, nil
}

// checkIdents checks dot-separated pre-release or build identifiers: not
// empty, [0-9A-Za-z-] only, and for numeric pre-release identifiers no
// leading zero.
func checkIdents(s string, pre bool) error {
	for id := range strings.SplitSeq(s, ".") {
		switch {
		case id == "":
			return errors.New("empty identifier")
		case strings.Trim(id, versionIdentChars) != "":
			return fmt.Errorf("identifier %q: only 0-9, A-Z, a-z and - are allowed", id)
		case pre && len(id) > 1 && id[0] == '0' && isNumeric(id):
			return fmt.Errorf("numeric identifier %q has a leading zero", id)
		}
	}
	return nil
}

func isNumeric(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

// String formats v as MAJOR.MINOR.PATCH[-PRE][+BUILD].
func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.Pre != "" {
		s += "-" + v.Pre
	}
	if v.Build != "" {
		s += "+" + v.Build
	}
	return s
}

// Compare returns -1, 0 or +1 as v has lower, equal or higher precedence
// than o (semver.org §11: build metadata is ignored, a pre-release is lower
// than its release, pre-release identifiers compare left to right, numeric
// ones numerically and below alphanumeric ones, a shorter list lower).
func (v Version) Compare(o Version) int {
	for _, d := range [][2]uint64{{v.Major, o.Major}, {v.Minor, o.Minor}, {v.Patch, o.Patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case v.Pre == o.Pre:
		return 0
	case v.Pre == "":
		return 1
	case o.Pre == "":
		return -1
	}
	a, b := strings.Split(v.Pre, "."), strings.Split(o.Pre, ".")
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := compareIdent(a[i], b[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// compareIdent compares two pre-release identifiers: numeric ones
// numerically and below alphanumeric ones, those in ASCII order.
func compareIdent(a, b string) int {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	switch {
	case errA == nil && errB == nil:
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	case errA == nil:
		return -1
	case errB == nil:
		return 1
	}
	return strings.Compare(a, b)
}
