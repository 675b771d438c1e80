package transport

import (
	"math"
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	utc := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04 Mon", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		spec string
		at   string
		want bool
	}{
		{"02:00-04:00", "2026-11-23 02:00 Mon", true},
		{"02:00-04:00", "2026-11-23 03:59 Mon", true},
		{"02:00-04:00", "2026-11-23 04:00 Mon", false},
		{"02:00-04:00", "2026-11-23 01:59 Mon", false},
		{"23:00-01:00", "2026-11-23 23:30 Mon", true},
		{"23:00-01:00", "2026-11-24 00:30 Tue", true},
		{"23:00-01:00", "2026-11-24 01:30 Tue", false},
		{"sat,sun 02:00-04:00", "2026-11-22 03:00 Sun", true},
		{"sat,sun 02:00-04:00", "2026-11-23 03:00 Mon", false},
		{"mon-fri 02:00-04:00", "2026-11-27 03:00 Fri", true},
		{"mon-fri 02:00-04:00", "2026-11-28 03:00 Sat", false},
		{"0 3 * * 1-5 2h", "2026-11-23 04:59 Mon", true},
		{"0 3 * * 1-5 2h", "2026-11-23 05:00 Mon", false},
		{"0 3 * * 1-5 2h", "2026-11-22 03:30 Sun", false},
		{"*/15 * * * * 5m", "2026-11-22 10:47 Sun", true},
		{"*/15 * * * * 5m", "2026-11-22 10:50 Sun", false},
	}
	for _, tc := range tests {
		w, err := ParseWindow(tc.spec, "UTC")
		if err != nil {
			t.Fatalf("ParseWindow(%q): %v", tc.spec, err)
		}
		if got := w.Contains(utc(tc.at)); got != tc.want {
			t.Errorf("%q.Contains(%s) = %v, want %v", tc.spec, tc.at, got, tc.want)
		}
	}
	w, _ := ParseWindow("02:00-04:00", "Europe/Berlin")
	next, ok := w.Next(utc("2026-11-23 12:00 Mon"))
	if want := utc("2026-11-24 01:00 Tue"); !ok || !next.Equal(want) {
		t.Errorf("Next = %v, %v; want %v (02:00 in Berlin)", next, ok, want)
	}
	for _, bad := range []string{"", "2-4", "02:00-02:00", "xyz 02:00-04:00", "61 * * * * 1h", "0 3 * * * forever"} {
		if _, err := ParseWindow(bad, "UTC"); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
}

func TestWindowSpec(t *testing.T) {
	tests := []struct {
		p    Policy
		want string
	}{
		{Policy{Reboot: RebootWindow}, ""},
		{Policy{Reboot: RebootWindow, WindowLength: 60}, ""},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * *"}, "0 2 * * *"},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * 1-5", WindowLength: 5400}, "0 2 * * 1-5 1h30m0s"},
	}
	for _, tc := range tests {
		if got := tc.p.WindowSpec(); got != tc.want {
			t.Errorf("%+v.WindowSpec() = %q, want %q", tc.p, got, tc.want)
		}
	}
	w, err := ParseWindow(Policy{Window: "0 2 * * 1-5", WindowLength: 5400}.WindowSpec(), "UTC")
	if err != nil {
		t.Fatalf("ParseWindow(WindowSpec): %v", err)
	}
	at := time.Date(2026, 11, 23, 3, 29, 0, 0, time.UTC) // Monday, 89 minutes in
	if !w.Contains(at) || w.Contains(at.Add(time.Minute)) {
		t.Errorf("window 0 2 * * 1-5 for 5400s: Contains(03:29) = %v, Contains(03:30) = %v; want true, false", w.Contains(at), w.Contains(at.Add(time.Minute)))
	}
}

func TestCheckWindow(t *testing.T) {
	tests := []struct {
		p    Policy
		want bool // true: a device parses it
	}{
		{Policy{Reboot: RebootWindow}, true},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * 1-5", WindowLength: 5400}, true},
		{Policy{Reboot: RebootWindow, Window: "*/15 0-6 1,15 * 7", WindowLength: 60}, true},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * *", WindowLength: int64(math.MaxInt64 / time.Second)}, true},
		{Policy{Reboot: RebootWindow, Window: "99 2 * * *", WindowLength: 3600}, false},
		{Policy{Reboot: RebootWindow, Window: "0 24 * * *", WindowLength: 3600}, false},
		{Policy{Reboot: RebootWindow, Window: "0 2 0 * *", WindowLength: 3600}, false},
		{Policy{Reboot: RebootWindow, Window: "0 2 * 13 *", WindowLength: 3600}, false},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * mon", WindowLength: 3600}, false},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * */0", WindowLength: 3600}, false},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * *"}, false},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * *", WindowLength: -60}, false},
		{Policy{Reboot: RebootWindow, Window: "0 2 * * *", WindowLength: int64(math.MaxInt64/time.Second) + 1}, false},
	}
	for _, tc := range tests {
		if err := tc.p.CheckWindow(); (err == nil) != tc.want {
			t.Errorf("%+v.CheckWindow() = %v, want ok %v", tc.p, err, tc.want)
		}
	}
}
