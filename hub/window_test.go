package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
)

// TestDeployRefusesBadWindow: a maintenance window the device could not
// parse is refused when the deployment is made, with the window named in
// the answer and no deployment recorded, instead of failing on the device
// after the whole image has been written.
func TestDeployRefusesBadWindow(t *testing.T) {
	ctx := context.Background()
	key, _, pub := hubtest.Key(t)
	s := hubtest.Start(t, pub, nil)
	if _, _, err := s.Hub.Upload(ctx, "oscar", bytes.NewReader(hubtest.Bundle(t, key, "app", "1.0.0", hubtest.Payload(7, 20<<10))), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Hub.Store().PutDevice(ctx, &hub.Device{ID: "dev-w", Status: hub.StatusAccepted}); err != nil {
		t.Fatal(err)
	}
	api := newAPIClient(t, s)
	tests := []struct {
		window string
		length int64
		want   int
	}{
		{"0 2 * * 1-5", 5400, http.StatusCreated},
		{"*/15 0-6 1,15 * 7", 600, http.StatusCreated},
		{"99 2 * * *", 3600, http.StatusBadRequest},   // minute out of range
		{"0 24 * * *", 3600, http.StatusBadRequest},   // hour out of range
		{"0 2 32 * *", 3600, http.StatusBadRequest},   // day of month out of range
		{"0 2 * 0 *", 3600, http.StatusBadRequest},    // month out of range
		{"0 2 * * mon", 3600, http.StatusBadRequest},  // weekday names are not cron values here
		{"0 2 * * 5-1", 3600, http.StatusBadRequest},  // backwards range
		{"0 2/0 * * *", 3600, http.StatusBadRequest},  // zero step
		{"0 2 * * *", 1 << 40, http.StatusBadRequest}, // longer than a device's time.Duration
	}
	created := 0
	for _, tc := range tests {
		req, _ := json.Marshal(hub.DeployRequest{Bundle: "app", Version: "1.0.0", Device: "dev-w", Reboot: "window", Window: tc.window, WindowLength: tc.length})
		code, body := api.do("POST", "/api/v1/deployments", hubtest.OperatorToken, req)
		if code != tc.want {
			t.Errorf("deploy with window %q for %ds: %d (%s), want %d", tc.window, tc.length, code, strings.TrimSpace(body), tc.want)
			continue
		}
		if code == http.StatusCreated {
			created++
			continue
		}
		if want := fmt.Sprintf("%q", tc.window); !strings.Contains(body, strings.ReplaceAll(want, `"`, `\"`)) {
			t.Errorf("refusal of window %q does not name it: %s", tc.window, strings.TrimSpace(body))
		}
	}
	deps, err := s.Hub.Store().Deployments(ctx, "dev-w", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != created {
		t.Errorf("%d deployments recorded, want %d (only the good windows)", len(deps), created)
	}
}
