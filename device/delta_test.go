package device

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/autopatcher/autopatcher/slots/sim"
	"github.com/autopatcher/autopatcher/transport"
)

func TestDownloadStatsString(t *testing.T) {
	tests := []struct {
		s    DownloadStats
		want string
	}{
		{DownloadStats{Chunks: 64, Fetched: 1, FetchedBytes: 34 << 10, Copied: 63, CopiedBytes: 63 << 16, From: "A"},
			"fetched 1 of 64 chunks (34 KiB), 63 copied from slot A"},
		{DownloadStats{Chunks: 10, Fetched: 10, FetchedBytes: 3 << 20},
			"fetched 10 of 10 chunks (3.0 MiB), 0 copied"},
		{DownloadStats{Chunks: 10, Fetched: 4, FetchedBytes: 100, Copied: 2, From: "B", Earlier: 4},
			"fetched 4 of 10 chunks (100 B), 2 copied from slot B, 4 fetched before a resume"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

// TestAgentReportsDelta: the second release differs from the first in one
// region; the device copies the rest from its active slot, and says so in
// the installing status, its log and Status.
func TestAgentReportsDelta(t *testing.T) {
	r := newRig(t)
	h := newHubSide(t)
	img := randomBytes(4, 2<<20)
	p1 := r.build(spec{version: "1.1.0", comps: []comp{image("rootfs", "1.1.0", img)}})
	stop := r.startAgent(h, r.engine())
	o1 := h.offer("dev-1", "dep-1", p1, r.trust, transport.Policy{Reboot: transport.RebootNow}, 0)
	h.waitState(o1.ID, "rebooting")
	stop()
	e, status := r.reboot(sim.Default)
	if status != Committed.String() {
		t.Fatalf("1.1.0: %s", status)
	}
	img2 := append([]byte(nil), img...)
	copy(img2[1<<20:], "a change in the middle of the image")
	p2 := r.build(spec{version: "1.2.0", comps: []comp{image("rootfs", "1.2.0", img2)}})
	r.startAgent(h, e)
	o2 := h.offer("dev-1", "dep-2", p2, r.trust, transport.Policy{Reboot: transport.RebootNow}, 0)
	h.waitState(o2.ID, "rebooting")

	d := e.LastDownload()
	if d == nil {
		t.Fatal("Status has no download stats")
	}
	if d.Bundle.Version != "1.2.0" || d.From != "B" || d.Fetched < 1 || d.Copied < 1 || d.Fetched+d.Copied != d.Chunks || d.Fetched > d.Chunks/4 {
		t.Errorf("download stats %+v, want a few chunks fetched and the rest copied from B", d)
	}
	if d.FetchedBytes == 0 || d.CopiedBytes == 0 || d.FetchedBytes+d.CopiedBytes != uint64(len(img2)) {
		t.Errorf("bytes fetched %d + copied %d, want %d", d.FetchedBytes, d.CopiedBytes, len(img2))
	}
	var reason string
	h.mu.Lock()
	for _, s := range h.statuses {
		if s.Offer == o2.ID && s.State == "installing" {
			reason = s.Reason
		}
	}
	h.mu.Unlock()
	if !regexp.MustCompile(`^fetched \d+ of \d+ chunks \([0-9.]+ [KM]?i?B\), \d+ copied from slot B$`).MatchString(reason) || reason != d.String() {
		t.Errorf("installing status says %q, want %q", reason, d.String())
	}
	t.Logf("installing: %s", reason)
	if !strings.Contains(reason, "of "+strconv.Itoa(d.Chunks)+" chunks") {
		t.Errorf("reason %q does not give the chunk total %d", reason, d.Chunks)
	}
}
