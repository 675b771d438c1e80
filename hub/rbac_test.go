package hub

import (
	"errors"
	"testing"
)

func TestRoles(t *testing.T) {
	tests := []struct {
		have, need Role
		want       bool
	}{
		{RoleViewer, RoleViewer, true},
		{RoleViewer, RoleOperator, false},
		{RoleOperator, RoleViewer, true},
		{RoleOperator, RoleAdmin, false},
		{RoleAdmin, RoleOperator, true},
		{Role("root"), RoleViewer, false},
		{Role(""), RoleViewer, false},
	}
	for _, tt := range tests {
		if got := tt.have.Allows(tt.need); got != tt.want {
			t.Errorf("%q.Allows(%q) = %v, want %v", tt.have, tt.need, got, tt.want)
		}
	}
}

func TestTokens(t *testing.T) {
	tests := []struct {
		name string
		list []Token
		ok   bool
	}{
		{"good", []Token{{Name: "a", Role: RoleAdmin, Token: "0123456789abcdef"}}, true},
		{"short", []Token{{Name: "a", Role: RoleAdmin, Token: "short"}}, false},
		{"bad role", []Token{{Name: "a", Role: "root", Token: "0123456789abcdef"}}, false},
		{"no name", []Token{{Role: RoleViewer, Token: "0123456789abcdef"}}, false},
	}
	for _, tt := range tests {
		tk, err := newTokens(tt.list)
		if (err == nil) != tt.ok {
			t.Errorf("%s: newTokens err = %v, want ok=%v", tt.name, err, tt.ok)
			continue
		}
		if tt.ok {
			if got, found := tk.lookup(tt.list[0].Token); !found || got.Name != tt.list[0].Name {
				t.Errorf("%s: lookup = %+v, %v", tt.name, got, found)
			}
			if _, found := tk.lookup(tt.list[0].Token + "x"); found {
				t.Errorf("%s: lookup of a wrong token succeeded", tt.name)
			}
		}
	}
}

func TestParseFilter(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		expr string
		want DeviceFilter
		err  bool
	}{
		{"", DeviceFilter{}, false},
		{"status=pending", DeviceFilter{Status: StatusPending}, false},
		{"hardware=rpi4,online=true", DeviceFilter{Hardware: "rpi4", Online: &yes}, false},
		{"online=false status=accepted", DeviceFilter{Status: StatusAccepted, Online: &no}, false},
		{"status=sleeping", DeviceFilter{}, true},
		{"online=maybe", DeviceFilter{}, true},
		{"colour=red", DeviceFilter{}, true},
		{"status", DeviceFilter{}, true},
	}
	for _, tt := range tests {
		got, err := ParseFilter(tt.expr)
		if tt.err {
			if !errors.Is(err, ErrBadRequest) {
				t.Errorf("ParseFilter(%q) err = %v, want ErrBadRequest", tt.expr, err)
			}
			continue
		}
		if err != nil || got.Status != tt.want.Status || got.Hardware != tt.want.Hardware ||
			(got.Online == nil) != (tt.want.Online == nil) || (got.Online != nil && *got.Online != *tt.want.Online) {
			t.Errorf("ParseFilter(%q) = %+v, %v, want %+v", tt.expr, got, err, tt.want)
		}
	}
}
