package hub_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type apiClient struct {
	t    *testing.T
	base string
}

func newAPIClient(t *testing.T, s *hub.Server) *apiClient {
	return &apiClient{t: t, base: "http://" + s.HTTPAddr()}
}

func (c *apiClient) do(method, path, token string, body []byte) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRBAC(t *testing.T) {
	key, _, pub := hubtest.Key(t)
	other, _, _ := hubtest.Key(t)
	s := hubtest.Start(t, pub, nil)
	c := newAPIClient(t, s)
	apb := hubtest.Bundle(t, key, "app", "1.0.0", hubtest.Payload(1, 100<<10))
	deploy := []byte(`{"bundle":"app","version":"1.0.0","device":"dev-1"}`)
	steps := []struct {
		name, method, path, token string
		body                      []byte
		want                      int
	}{
		{"no token", "GET", "/api/v1/bundles", "", nil, 401},
		{"bad token", "GET", "/api/v1/bundles", "nope-nope-nope-nope", nil, 401},
		{"viewer lists", "GET", "/api/v1/bundles", hubtest.ViewerToken, nil, 200},
		{"viewer uploads", "POST", "/api/v1/bundles", hubtest.ViewerToken, apb, 403},
		{"operator uploads unknown key", "POST", "/api/v1/bundles", hubtest.OperatorToken, hubtest.Bundle(t, other, "app", "1.0.0", []byte("x")), 422},
		{"operator uploads", "POST", "/api/v1/bundles", hubtest.OperatorToken, apb, 201},
		{"operator uploads again", "POST", "/api/v1/bundles", hubtest.OperatorToken, apb, 409},
		{"viewer shows bundle", "GET", "/api/v1/bundles/app/1.0.0", hubtest.ViewerToken, nil, 200},
		{"viewer accepts", "POST", "/api/v1/devices/dev-1/accept", hubtest.ViewerToken, nil, 403},
		{"operator accepts unknown", "POST", "/api/v1/devices/dev-1/accept", hubtest.OperatorToken, nil, 404},
		{"viewer deploys", "POST", "/api/v1/deployments", hubtest.ViewerToken, deploy, 403},
		{"operator deploys to unknown", "POST", "/api/v1/deployments", hubtest.OperatorToken, deploy, 404},
		{"bad reboot policy", "POST", "/api/v1/deployments", hubtest.OperatorToken, []byte(`{"bundle":"app","version":"1.0.0","device":"dev-1","reboot":"later"}`), 400},
		{"window without length", "POST", "/api/v1/deployments", hubtest.OperatorToken, []byte(`{"bundle":"app","version":"1.0.0","device":"dev-1","reboot":"window","window":"0 2 * * *"}`), 400},
		{"window with hub policy", "POST", "/api/v1/deployments", hubtest.OperatorToken, []byte(`{"bundle":"app","version":"1.0.0","device":"dev-1","reboot":"hub","window":"0 2 * * *","window_length":3600}`), 400},
		{"viewer reboots", "POST", "/api/v1/devices/dev-1/reboot", hubtest.ViewerToken, nil, 403},
		{"viewer asks for a report", "POST", "/api/v1/devices/dev-1/report", hubtest.ViewerToken, nil, 403},
		{"operator reboots unknown", "POST", "/api/v1/devices/dev-1/reboot", hubtest.OperatorToken, nil, 404},
		{"viewer cancels", "POST", "/api/v1/deployments/1/cancel", hubtest.ViewerToken, nil, 403},
		{"operator cancels unknown", "POST", "/api/v1/deployments/1/cancel", hubtest.OperatorToken, nil, 404},
		{"operator cancels bad id", "POST", "/api/v1/deployments/x/cancel", hubtest.OperatorToken, nil, 400},
		{"bad filter", "GET", "/api/v1/devices?filter=colour=red", hubtest.ViewerToken, nil, 400},
		{"viewer reads audit", "GET", "/api/v1/audit", hubtest.ViewerToken, nil, 403},
		{"operator deletes", "DELETE", "/api/v1/bundles/app/1.0.0", hubtest.OperatorToken, nil, 403},
		{"admin deletes", "DELETE", "/api/v1/bundles/app/1.0.0", hubtest.AdminToken, nil, 204},
		{"admin deletes again", "DELETE", "/api/v1/bundles/app/1.0.0", hubtest.AdminToken, nil, 404},
		{"unknown endpoint", "GET", "/api/v1/nothing", hubtest.AdminToken, nil, 404},
	}
	for _, st := range steps {
		code, body := c.do(st.method, st.path, st.token, st.body)
		if code != st.want {
			t.Errorf("%s: %s %s = %d (%s), want %d", st.name, st.method, st.path, code, strings.TrimSpace(body), st.want)
		}
	}
	code, body := c.do("GET", "/api/v1/audit", hubtest.OperatorToken, nil)
	if code != 200 {
		t.Fatalf("audit: %d %s", code, body)
	}
	var ar hub.AuditResponse
	if err := json.Unmarshal([]byte(body), &ar); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ar.Entries {
		got = append(got, e.Actor+":"+e.Action+":"+e.Target)
	}
	want := "oscar:bundle.refused: oscar:bundle.upload:app@1.0.0 alice:bundle.delete:app@1.0.0"
	if strings.Join(got, " ") != want || !ar.Verified {
		t.Errorf("audit = %q verified=%v, want %q verified", strings.Join(got, " "), ar.Verified, want)
	}
}
