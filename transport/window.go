package transport

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Window is a recurring maintenance window in which a reboot may happen.
// The hub carries only the cron form on the wire (Policy.Window plus
// Policy.WindowLength, joined by Policy.WindowSpec); a device's own
// configuration may use any form. Both sides parse with ParseWindow, so a
// window the device would refuse is refused at the hub when it is deployed.
//
// Three forms are accepted:
//
//	"02:00-04:00"            every day, 02:00 to 04:00 (end before start wraps past midnight)
//	"sat,sun 02:00-04:00"    only on the listed weekdays (mon..sun, ranges like mon-fri)
//	"0 2 * * 1-5 90m"        cron-like: minute hour day-of-month month day-of-week, then the length
type Window struct {
	loc   *time.Location
	match func(t time.Time) bool // reports whether t lies inside the window
}

// ParseWindow parses a window specification in the given time zone ("Local", "UTC", "Europe/Berlin").
func ParseWindow(spec, zone string) (*Window, error) {
	if zone == "" {
		zone = "Local"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", zone, err)
	}
	f := strings.Fields(strings.ToLower(spec))
	switch len(f) {
	case 1, 2:
		days := [7]bool{true, true, true, true, true, true, true}
		if len(f) == 2 {
			if days, err = parseWeekdays(f[0]); err != nil {
				return nil, err
			}
		}
		start, end, err := parseSpan(f[len(f)-1])
		if err != nil {
			return nil, err
		}
		w := &Window{loc: loc}
		w.match = func(t time.Time) bool {
			t = t.In(loc)
			m := t.Hour()*60 + t.Minute()
			if start <= end {
				return days[t.Weekday()] && m >= start && m < end
			}
			// Wraps past midnight: the part after midnight belongs to the previous day's window.
			if m >= start {
				return days[t.Weekday()]
			}
			return m < end && days[(t.Weekday()+6)%7]
		}
		return w, nil
	case 6:
		length, err := time.ParseDuration(f[5])
		if err != nil || length <= 0 {
			return nil, fmt.Errorf("window length %q: want a positive duration", f[5])
		}
		var sets [5]map[int]bool
		limits := [5][2]int{{0, 59}, {0, 23}, {1, 31}, {1, 12}, {0, 7}}
		for i := range 5 {
			if sets[i], err = parseCronField(f[i], limits[i][0], limits[i][1]); err != nil {
				return nil, fmt.Errorf("window field %d %q: %w", i+1, f[i], err)
			}
		}
		if sets[4][7] {
			sets[4][0] = true
		}
		starts := func(t time.Time) bool {
			return sets[0][t.Minute()] && sets[1][t.Hour()] && sets[2][t.Day()] &&
				sets[3][int(t.Month())] && sets[4][int(t.Weekday())]
		}
		w := &Window{loc: loc}
		w.match = func(t time.Time) bool {
			t = t.In(loc).Truncate(time.Minute)
			for back := time.Duration(0); back < length; back += time.Minute {
				if starts(t.Add(-back)) {
					return true
				}
				if back > 8*24*time.Hour {
					break
				}
			}
			return false
		}
		return w, nil
	}
	return nil, fmt.Errorf("window %q: want \"HH:MM-HH:MM\", \"DAYS HH:MM-HH:MM\" or \"M H DOM MON DOW LENGTH\"", spec)
}

// WindowSpec is the window specification p stands for in ParseWindow's cron
// form: Window followed by WindowLength as a duration ("0 2 * * * 1h30m0s").
// It is "" when p names no window, leaving the device's own in force.
func (p Policy) WindowSpec() string {
	if p.Window == "" {
		return ""
	}
	w := p.Window
	if p.WindowLength > 0 {
		w += " " + (time.Duration(p.WindowLength) * time.Second).String()
	}
	return w
}

// CheckWindow reports why a device could not parse p's window, or nil when
// it can or when p names none: the cron fields and the length as
// ParseWindow reads them from WindowSpec, and a WindowLength that a
// time.Duration holds. The time zone is the device's own and changes only
// when a window lies, never whether it parses, so UTC stands in for it.
func (p Policy) CheckWindow() error {
	if p.Window == "" {
		return nil
	}
	if p.WindowLength > int64(math.MaxInt64/time.Second) {
		return fmt.Errorf("window length %ds: longer than %ds", p.WindowLength, int64(math.MaxInt64/time.Second))
	}
	_, err := ParseWindow(p.WindowSpec(), "UTC")
	return err
}

// Contains reports whether t lies inside the window.
func (w *Window) Contains(t time.Time) bool { return w.match(t) }

// Next returns the first minute at or after t that lies inside the window,
// searching up to eight days ahead; ok is false if there is none.
func (w *Window) Next(t time.Time) (time.Time, bool) {
	if w.match(t) {
		return t, true
	}
	c := t.Truncate(time.Minute).Add(time.Minute)
	for range 8 * 24 * 60 {
		if w.match(c) {
			return c, true
		}
		c = c.Add(time.Minute)
	}
	return time.Time{}, false
}

func parseSpan(s string) (start, end int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("window %q: want HH:MM-HH:MM", s)
	}
	if start, err = parseClock(a); err != nil {
		return 0, 0, err
	}
	if end, err = parseClock(b); err != nil {
		return 0, 0, err
	}
	if start == end {
		return 0, 0, fmt.Errorf("window %q: empty", s)
	}
	return start, end, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("time %q: want HH:MM", s)
	}
	return hh*60 + mm, nil
}

var weekdays = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

func parseWeekdays(s string) ([7]bool, error) {
	var days [7]bool
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		from, ok1 := weekdays[a]
		to := from
		ok2 := true
		if isRange {
			to, ok2 = weekdays[b]
		}
		if !ok1 || !ok2 {
			return days, fmt.Errorf("weekdays %q: want names like mon,wed or mon-fri", s)
		}
		for d := from; ; d = (d + 1) % 7 {
			days[d] = true
			if d == to {
				break
			}
		}
	}
	return days, nil
}

func parseCronField(s string, lo, hi int) (map[int]bool, error) {
	set := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		rng, stepS, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			var err error
			if step, err = strconv.Atoi(stepS); err != nil || step < 1 {
				return nil, fmt.Errorf("bad step %q", stepS)
			}
		}
		from, to := lo, hi
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if from, err = strconv.Atoi(a); err != nil {
				return nil, fmt.Errorf("bad value %q", a)
			}
			to = from
			if isRange {
				if to, err = strconv.Atoi(b); err != nil {
					return nil, fmt.Errorf("bad value %q", b)
				}
			} else if hasStep {
				to = hi
			}
		}
		if from < lo || to > hi || from > to {
			return nil, fmt.Errorf("%d-%d outside %d-%d", from, to, lo, hi)
		}
		for v := from; v <= to; v += step {
			set[v] = true
		}
	}
	return set, nil
}
