package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// record is the part of autopatchd's state.json (device.Record) the console
// markers show. It is declared here rather than imported so that /init does
// not link the device package (about 1.5 MiB more in every initramfs).
type record struct {
	State  string `json:"state"`
	Target string `json:"target"`
	Bundle *struct {
		Version string `json:"version"`
	} `json:"bundle"`
	Reason string `json:"reason"`
	Last   *struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
		Bundle struct {
			Version string `json:"version"`
		} `json:"bundle"`
	} `json:"last"`
}

func (r record) String() string {
	s := r.State
	if r.Bundle != nil {
		s += fmt.Sprintf(" bundle=%s target=%s", r.Bundle.Version, r.Target)
	}
	if r.Reason != "" {
		s += fmt.Sprintf(" reason=%q", r.Reason)
	}
	if r.Last != nil {
		s += fmt.Sprintf(" last=%s:%s", r.Last.State, r.Last.Bundle.Version)
		if r.Last.Reason != "" {
			s += fmt.Sprintf(" last_reason=%q", r.Last.Reason)
		}
	}
	return s
}

// watchState prints autopatchd's persisted state whenever it changes: the
// console markers of commits, rollbacks and installs, stamped within 50 ms
// of the write.
func watchState(dir string) {
	var last string
	var lastState string
	journal := false
	first := true
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
			var r record
			if json.Unmarshal(b, &r) == nil {
				if s := r.String(); s != last {
					if first {
						logf("state at start: %s", s)
					} else {
						logf("state changed: %s -> %s", orNone(lastState), s)
					}
					last, lastState, first = s, r.State, false
				}
			}
		} else if first {
			logf("state at start: none")
			first = false
		}
		_, err := os.Stat(filepath.Join(dir, "install.json"))
		if j := err == nil; j != journal {
			journal = j
			if j {
				logf("install journal created: writing the inactive slot")
			} else {
				logf("install journal removed")
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func orNone(s string) string {
	if strings.TrimSpace(s) == "" {
		return "none"
	}
	return s
}
