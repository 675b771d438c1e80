package bundle

import (
	"errors"
	"fmt"
	"strings"
)

// Constraint is a parsed version constraint (semver.go documents the
// grammar). The zero Constraint matches nothing.
type Constraint struct {
	groups []termGroup // any group may match
}

// termGroup is terms that must all match.
type termGroup struct {
	terms []term
	pre   bool // a term names a pre-release: pre-release versions may match
}

// term is one comparison. wild says how many trailing parts of v were
// missing or a wildcard: 0 none (1.2.3), 1 the patch (1.2), 2 the minor
// and patch (1), 3 all (*).
type term struct {
	op   string // "", "=", "!=", ">", "<", ">=", "<=", "~" or "^"
	v    Version
	wild int
}

// ops maps each operator to its canonical form.
var ops = map[string]string{
	"": "", "=": "=", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "=>": ">=",
	"<=": "<=", "=<": "<=", "~": "~", "~>": "~", "^": "^",
}

// ParseConstraint parses a version constraint such as ">= 1.2, < 2" or
// "^1.4 || ~2.0.3".
func ParseConstraint(s string) (Constraint, error) {
	if len(s) > maxConstraintLen {
		return Constraint{}, fmt.Errorf("parse constraint: longer than %d bytes", maxConstraintLen)
	}
	ors := strings.Split(s, "||")
	if len(ors) > maxConstraintOrs {
		return Constraint{}, fmt.Errorf("parse constraint %q: more than %d alternatives", s, maxConstraintOrs)
	}
	var c Constraint
	for _, or := range ors {
		g, err := parseGroup(or)
		if err != nil {
			return Constraint{}, fmt.Errorf("parse constraint %q: %w", s, err)
		}
		c.groups = append(c.groups, g)
	}
	return c, nil
}

// parseGroup parses terms separated by commas or spaces, where "A - B"
// (spaces around the dash) stands for ">= A, <= B".
func parseGroup(s string) (termGroup, error) {
	var g termGroup
	add := func(op, text string) error {
		t, err := parseTerm(op, text)
		if err != nil {
			return err
		}
		g.terms = append(g.terms, t)
		g.pre = g.pre || t.v.Pre != ""
		return nil
	}
	sc := scanner{s: s}
	sc.space()
	for {
		if sc.done() {
			return termGroup{}, errors.New("missing a version")
		}
		op := sc.op()
		if _, ok := ops[op]; !ok {
			return termGroup{}, fmt.Errorf("unknown operator %q", op)
		}
		sc.space()
		text := sc.word()
		spaced := sc.space()
		if !sc.done() && sc.s[sc.i] == '-' && spaced && sc.i+1 < len(sc.s) && isSpace(sc.s[sc.i+1]) {
			if op != "" {
				return termGroup{}, fmt.Errorf("range %s%s - ...: the ends of a range take no operator", op, text)
			}
			sc.i++
			sc.space()
			if err := add(">=", text); err != nil {
				return termGroup{}, err
			}
			if sc.done() || sc.op() != "" {
				return termGroup{}, fmt.Errorf("range %s - ...: the upper end must be a version", text)
			}
			op, text = "<=", sc.word()
			spaced = sc.space()
		}
		if err := add(op, text); err != nil {
			return termGroup{}, err
		}
		switch {
		case sc.done():
			return g, nil
		case sc.s[sc.i] == ',':
			sc.i++
			sc.space()
		case !spaced:
			return termGroup{}, fmt.Errorf("unexpected %q", sc.s[sc.i:])
		}
	}
}

// parseTerm parses a version whose minor and patch may be missing or a
// wildcard (x, X, *); parts after a wildcard are not used.
func parseTerm(op, text string) (term, error) {
	t := term{op: ops[op]}
	if text == "" {
		return term{}, fmt.Errorf("operator %q without a version", op)
	}
	core, tail := text, ""
	if i := strings.IndexAny(text, "-+"); i >= 0 {
		core, tail = text[:i], text[i:]
	}
	parts := strings.Split(strings.TrimPrefix(core, "v"), ".")
	if len(parts) > 3 {
		return term{}, fmt.Errorf("version %q: %w", text, errVersionSyntax)
	}
	for i, p := range parts {
		if p == "" || strings.Trim(p, "0123456789xX*") != "" {
			return term{}, fmt.Errorf("version %q: %w", text, errVersionSyntax)
		}
		if t.wild == 0 && (p == "x" || p == "X" || p == "*") {
			t.wild = 3 - i
		}
	}
	if t.wild == 0 && len(parts) < 3 {
		t.wild = 3 - len(parts)
	}
	if t.wild == 0 {
		v, err := parseVersion(text, true)
		if err != nil {
			return term{}, fmt.Errorf("version %q: %w", text, err)
		}
		t.v = v
		return t, nil
	}
	// The parts before the first wildcard, zeros for the rest, and the
	// pre-release (build metadata is dropped).
	fixed := parts[:3-t.wild]
	for len(fixed) < 3 {
		fixed = append(fixed, "0")
	}
	tail, _, _ = strings.Cut(tail, "+")
	v, err := parseVersion(strings.Join(fixed, ".")+tail, true)
	if err != nil {
		return term{}, fmt.Errorf("version %q: %w", text, err)
	}
	t.v = v
	return t, nil
}

// Check reports whether v satisfies c.
func (c Constraint) Check(v Version) bool {
	for _, g := range c.groups {
		if v.Pre != "" && !g.pre {
			continue
		}
		ok := true
		for _, t := range g.terms {
			if !t.match(v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (t term) match(v Version) bool {
	c := t.v
	minorWild, patchWild := t.wild == 2, t.wild == 1
	switch t.op {
	case "", "=":
		if t.wild > 0 {
			return t.tilde(v)
		}
		return v.Compare(c) == 0
	case "!=":
		if t.wild > 0 {
			switch {
			case v.Major != c.Major:
				return true
			case minorWild:
				return false
			case v.Minor != c.Minor:
				return true
			case patchWild:
				return v.Pre != c.Pre
			}
		}
		return v.Compare(c) != 0
	case ">":
		if t.wild > 0 {
			switch {
			case v.Major != c.Major:
				return v.Major > c.Major
			case minorWild:
				return false
			case patchWild:
				return v.Minor > c.Minor
			}
		}
		return v.Compare(c) > 0
	case "<":
		return v.Compare(c) < 0
	case ">=":
		return v.Compare(c) >= 0
	case "<=":
		if t.wild > 0 {
			return v.Major < c.Major || v.Major == c.Major && (minorWild || v.Minor <= c.Minor)
		}
		return v.Compare(c) <= 0
	case "~":
		return t.tilde(v)
	case "^":
		return t.caret(v)
	}
	return false
}

// tilde: at least c, and the same major and (unless it is a wildcard)
// minor; a constraint of only zeros or * allows anything from c up.
func (t term) tilde(v Version) bool {
	c := t.v
	switch {
	case v.Compare(c) < 0:
		return false
	case c.Major == 0 && c.Minor == 0 && c.Patch == 0 && t.wild != 1 && t.wild != 2:
		return true
	}
	return v.Major == c.Major && (t.wild == 2 || v.Minor == c.Minor)
}

// caret: at least c, and the same first non-zero part of major, minor and
// patch (with a wildcard, the part before it).
func (t term) caret(v Version) bool {
	c := t.v
	switch {
	case v.Compare(c) < 0:
		return false
	case c.Major > 0 || t.wild == 2:
		return v.Major == c.Major
	case v.Major > 0:
		return false
	case c.Minor > 0 || t.wild == 1:
		return v.Minor == c.Minor
	case v.Minor > 0:
		return false
	}
	return v.Patch == c.Patch
}

// scanner walks a constraint group.
type scanner struct {
	s string
	i int
}

func (sc *scanner) done() bool { return sc.i >= len(sc.s) }

// space skips white space and reports whether there was any.
func (sc *scanner) space() bool {
	start := sc.i
	for !sc.done() && isSpace(sc.s[sc.i]) {
		sc.i++
	}
	return sc.i > start
}

// op reads a run of operator characters.
func (sc *scanner) op() string {
	start := sc.i
	for !sc.done() && strings.IndexByte("=!<>~^", sc.s[sc.i]) >= 0 {
		sc.i++
	}
	return sc.s[start:sc.i]
}

// word reads up to the next white space or comma.
func (sc *scanner) word() string {
	start := sc.i
	for !sc.done() && !isSpace(sc.s[sc.i]) && sc.s[sc.i] != ',' {
		sc.i++
	}
	return sc.s[start:sc.i]
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' }
