package bundle

import (
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in         string
		strict     bool // accepted by ParseVersion
		loose      bool // accepted by ParseLooseVersion
		want       Version
		wantString string
	}{
		{"1.2.3", true, true, Version{Major: 1, Minor: 2, Patch: 3}, "1.2.3"},
		{"0.0.0", true, true, Version{}, "0.0.0"},
		{"2.1.0-rc.1+build.5", true, true, Version{Major: 2, Minor: 1, Pre: "rc.1", Build: "build.5"}, "2.1.0-rc.1+build.5"},
		{"1.0.0-alpha-1.x-y", true, true, Version{Major: 1, Pre: "alpha-1.x-y"}, "1.0.0-alpha-1.x-y"},
		{"1.0.0+0.build.01", true, true, Version{Major: 1, Build: "0.build.01"}, "1.0.0+0.build.01"},
		{"1.0.0-0a.00a", true, true, Version{Major: 1, Pre: "0a.00a"}, "1.0.0-0a.00a"},
		{"18446744073709551615.0.0", true, true, Version{Major: 1<<64 - 1}, "18446744073709551615.0.0"},
		{"v1.2.3", false, true, Version{Major: 1, Minor: 2, Patch: 3}, "1.2.3"},
		{"1.2", false, true, Version{Major: 1, Minor: 2}, "1.2.0"},
		{"2023", false, true, Version{Major: 2023}, "2023.0.0"},
		{"01.02.03", false, true, Version{Major: 1, Minor: 2, Patch: 3}, "1.2.3"},
		{"1.2-beta", false, true, Version{Major: 1, Minor: 2, Pre: "beta"}, "1.2.0-beta"},
		{"", false, false, Version{}, ""},
		{"v", false, false, Version{}, ""},
		{"1.", false, false, Version{}, ""},
		{"1.2.3.4", false, false, Version{}, ""},
		{"1.2.3-", false, false, Version{}, ""},
		{"1.2.3+", false, false, Version{}, ""},
		{"1.2.3-rc..1", false, false, Version{}, ""},
		{"1.2.3-01", false, false, Version{}, ""},
		{"1.2.3-rc_1", false, false, Version{}, ""},
		{"1.2.x", false, false, Version{}, ""},
		{" 1.2.3", false, false, Version{}, ""},
		{"-1.2.3", false, false, Version{}, ""},
		{"18446744073709551616.0.0", false, false, Version{}, ""},
	}
	for _, tc := range tests {
		v, err := ParseVersion(tc.in)
		if (err == nil) != tc.strict {
			t.Errorf("ParseVersion(%q) error = %v, want accepted %v", tc.in, err, tc.strict)
		}
		if err == nil && v != tc.want {
			t.Errorf("ParseVersion(%q) = %+v, want %+v", tc.in, v, tc.want)
		}
		v, err = ParseLooseVersion(tc.in)
		if (err == nil) != tc.loose {
			t.Errorf("ParseLooseVersion(%q) error = %v, want accepted %v", tc.in, err, tc.loose)
			continue
		}
		if err != nil {
			continue
		}
		if v != tc.want {
			t.Errorf("ParseLooseVersion(%q) = %+v, want %+v", tc.in, v, tc.want)
		}
		if got := v.String(); got != tc.wantString {
			t.Errorf("ParseLooseVersion(%q).String() = %q, want %q", tc.in, got, tc.wantString)
		}
	}
}

func TestVersionCompare(t *testing.T) {
	// Ascending precedence, from semver.org §11 and around it.
	order := []string{
		"0.9.9", "1.0.0-0", "1.0.0-1", "1.0.0-2", "1.0.0-10", "1.0.0-alpha", "1.0.0-alpha.1",
		"1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0",
		"1.0.1", "1.1.0", "1.10.0", "2.0.0",
	}
	for i, a := range order {
		va, err := ParseVersion(a)
		if err != nil {
			t.Fatal(err)
		}
		for j, b := range order {
			vb, err := ParseVersion(b)
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := va.Compare(vb); got != want {
				t.Errorf("%s.Compare(%s) = %d, want %d", a, b, got, want)
			}
		}
	}
	// Build metadata takes no part in precedence.
	a, _ := ParseVersion("1.0.0+a")
	b, _ := ParseVersion("1.0.0+b")
	if got := a.Compare(b); got != 0 {
		t.Errorf("1.0.0+a.Compare(1.0.0+b) = %d, want 0", got)
	}
}

func TestConstraint(t *testing.T) {
	tests := []struct {
		constraint string
		match      string // versions that satisfy it, space-separated
		miss       string // versions that do not
	}{
		{"1.2.3", "1.2.3 1.2.3+b", "1.2.4 1.2.3-rc.1 1.2.2"},
		{"=1.2", "1.2.0 1.2.9", "1.3.0 1.1.9 1.2.0-rc.1"},
		{"1", "1.0.0 1.9.9", "2.0.0 0.9.0"},
		{"*", "0.0.0 3.4.5", "1.0.0-rc.1"},
		{"1.x", "1.0.0 1.5.0", "2.0.0"},
		{"!= 1.2.3", "1.2.4 1.2.2", "1.2.3"},
		{"!=1.2", "1.3.0 1.1.0 2.2.0", "1.2.0 1.2.7"},
		{"> 1.2.3", "1.2.4 2.0.0", "1.2.3 1.0.0"},
		{">1.2", "1.3.0 2.0.0", "1.2.9 1.2.0"},
		{">1", "2.0.0", "1.9.9"},
		{"< 1.2.3", "1.2.2 0.1.0", "1.2.3 1.3.0"},
		{"<2", "1.9.9", "2.0.0 2.0.0-rc.1"},
		{">= 1.2, < 2", "1.2.0 1.9.9", "1.1.9 2.0.0"},
		{">=1.2 <2", "1.5.0", "2.1.0"},
		{"=> 2023.1", "2023.1.0 2023.10.0 2024.1.0", "2022.12.0"},
		{"<= 1.2", "1.2.9 1.0.0 0.5.0", "1.3.0 2.0.0"},
		{"=<1", "1.9.9", "2.0.0"},
		{"<= 1.2.3", "1.2.3", "1.2.4"},
		{"~1.2.3", "1.2.3 1.2.9", "1.3.0 1.2.2"},
		{"~>1.2", "1.2.0 1.2.9", "1.3.0"},
		{"~1", "1.0.0 1.9.0", "2.0.0"},
		{"^1.2.3", "1.2.3 1.9.0", "2.0.0 1.2.2"},
		{"^1", "1.0.0 1.9.9", "2.0.0 0.9.0"},
		{"^0.2.3", "0.2.3 0.2.9", "0.3.0 0.2.2 1.0.0"},
		{"^0.0.3", "0.0.3", "0.0.4 0.1.0"},
		{"^0.0", "0.0.0 0.0.9", "0.1.0"},
		{"^0", "0.0.0 0.9.9", "1.0.0"},
		{"1.2 - 1.4.5", "1.2.0 1.4.5", "1.1.9 1.4.6"},
		{"1.2.3 - 2", "1.2.3 2.9.0", "3.0.0 1.2.2"},
		{"^1.4 || ~2.0.3", "1.4.0 1.9.0 2.0.3 2.0.9", "1.3.9 2.1.0 3.0.0"},
		{">= 2.0.0-rc.1, < 3", "2.0.0-rc.1 2.0.0-rc.2 2.0.0 2.5.0 3.0.0-rc.1", "2.0.0-alpha 3.0.0 1.9.0"},
		{"^2.0.0-rc.1", "2.0.0-rc.1 2.0.0-rc.10 2.1.0", "2.0.0-beta 3.0.0"},
		{"v1.2.3", "1.2.3", "1.2.4"},
		{" >= 1 ,\t< 2 ", "1.0.0", "2.0.0"},
	}
	for _, tc := range tests {
		c, err := ParseConstraint(tc.constraint)
		if err != nil {
			t.Errorf("ParseConstraint(%q): %v", tc.constraint, err)
			continue
		}
		for _, list := range []struct {
			versions string
			want     bool
		}{{tc.match, true}, {tc.miss, false}} {
			for _, s := range strings.Fields(list.versions) {
				v, err := ParseLooseVersion(s)
				if err != nil {
					t.Fatal(err)
				}
				if got := c.Check(v); got != list.want {
					t.Errorf("%q.Check(%s) = %v, want %v", tc.constraint, s, got, list.want)
				}
			}
		}
	}
}

func TestConstraintErrors(t *testing.T) {
	for _, s := range []string{
		"", " ", "1 ||", "|| 1", ",1", "1,", "1,,2", "<>1", "==1", "!1", ">==1", "a", "1x", "1.2.3.4",
		"1.2.3-", "1.2.3-01", "x.1y", ">= 1 - 2", "1 - >=2", "1 - 2 - 3", "1 -2", "1- 2", "1 - ",
		string(make([]byte, maxConstraintLen+1)),
	} {
		if _, err := ParseConstraint(s); err == nil {
			t.Errorf("ParseConstraint(%q) = nil error, want one", s)
		}
	}
	many := "1"
	for range maxConstraintOrs {
		many += " || 1"
	}
	if _, err := ParseConstraint(many); err == nil {
		t.Errorf("ParseConstraint with %d alternatives = nil error, want one", maxConstraintOrs+1)
	}
}
