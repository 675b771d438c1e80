package device

import (
	"errors"
	"slices"
	"testing"

	"github.com/autopatcher/autopatcher/bundle"
)

func TestOrder(t *testing.T) {
	c := func(name, version string, deps ...string) bundle.Component {
		comp := bundle.Component{Name: name, Version: version}
		for _, d := range deps {
			n, con, _ := cut(d)
			comp.Depends = append(comp.Depends, bundle.Dependency{Name: n, Constraint: con})
		}
		return comp
	}
	installed := map[string]string{"base": "1.4.0"}
	tests := []struct {
		name  string
		comps []bundle.Component
		want  []string
		err   error
	}{
		{"manifest order kept", []bundle.Component{c("a", "1.0.0"), c("b", "1.0.0")}, []string{"a", "b"}, nil},
		{"dependencies first", []bundle.Component{c("app", "1.0.0", "lib >= 1"), c("lib", "1.0.0", "kernel"), c("kernel", "5.0.0")}, []string{"kernel", "lib", "app"}, nil},
		{"diamond", []bundle.Component{c("d", "1.0.0", "b", "c"), c("c", "1.0.0", "a"), c("b", "1.0.0", "a"), c("a", "1.0.0")}, []string{"a", "c", "b", "d"}, nil},
		{"installed dependency", []bundle.Component{c("app", "1.0.0", "base ^1.2")}, []string{"app"}, nil},
		{"installed too old", []bundle.Component{c("app", "1.0.0", "base >= 2")}, nil, ErrDependency},
		{"bundle version too old", []bundle.Component{c("app", "1.0.0", "lib >= 2"), c("lib", "1.5.0")}, nil, ErrDependency},
		{"missing", []bundle.Component{c("app", "1.0.0", "ghost")}, nil, ErrDependency},
		{"cycle", []bundle.Component{c("x", "1.0.0", "y"), c("y", "1.0.0", "z"), c("z", "1.0.0", "x"), c("w", "1.0.0")}, nil, ErrCycle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &bundle.Manifest{Components: tc.comps}
			idx, err := order(m, installed)
			if !errors.Is(err, tc.err) {
				t.Fatalf("order = %v, want %v", err, tc.err)
			}
			var got []string
			for _, i := range idx {
				got = append(got, m.Components[i].Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("order = %v, want %v", got, tc.want)
			}
		})
	}
}

func cut(d string) (string, string, bool) {
	for i := range d {
		if d[i] == ' ' {
			return d[:i], d[i+1:], true
		}
	}
	return d, "", false
}
