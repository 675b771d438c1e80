package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/autopatcher/autopatcher/bundle"
)

// API serves the hub's HTTP API (JSON). Every endpoint checks the caller's token and
// role (see Routes); every state-changing call is written to the audit log.
type API struct {
	hub       *Hub
	tokens    tokens
	maxUpload int64
	mux       *http.ServeMux
}

// NewAPI builds the HTTP handler. maxUpload caps bundle uploads (0 = DefaultMaxUpload).
func NewAPI(h *Hub, list []Token, maxUpload int64) (*API, error) {
	tk, err := newTokens(list)
	if err != nil {
		return nil, err
	}
	a := &API{hub: h, tokens: tk, maxUpload: maxUpload, mux: http.NewServeMux()}
	handlers := map[string]func(w http.ResponseWriter, r *http.Request, who Token) error{
		"GET /api/v1/bundles":                     a.listBundles,
		"POST /api/v1/bundles":                    a.upload,
		"GET /api/v1/bundles/{name}/{version}":    a.showBundle,
		"DELETE /api/v1/bundles/{name}/{version}": a.deleteBundle,
		"GET /api/v1/devices":                     a.listDevices,
		"GET /api/v1/devices/{id}":                a.showDevice,
		"POST /api/v1/devices/{id}/accept":        a.setStatus(StatusAccepted),
		"POST /api/v1/devices/{id}/reject":        a.setStatus(StatusRejected),
		"POST /api/v1/devices/{id}/reboot":        a.command(h.Reboot),
		"POST /api/v1/devices/{id}/report":        a.command(h.Report),
		"POST /api/v1/deployments":                a.deploy,
		"POST /api/v1/deployments/{id}/cancel":    a.cancelDeployment,
		"GET /api/v1/deployments/{id}":            a.showDeployment,
		"GET /api/v1/audit":                       a.audit,
	}
	for _, rt := range Routes {
		fn, ok := handlers[rt.Pattern]
		if !ok {
			return nil, fmt.Errorf("api: no handler for %s", rt.Pattern)
		}
		a.mux.Handle(rt.Pattern, a.guard(rt.Role, fn))
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return a, nil
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *API) guard(need Role, fn func(http.ResponseWriter, *http.Request, Token) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		tk, found := a.tokens.lookup(strings.TrimSpace(secret))
		if !ok || !found {
			a.hub.log.Warn("api unauthenticated", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "token_given", ok)
			w.Header().Set("WWW-Authenticate", `Bearer realm="autopatch-hub"`)
			writeError(w, http.StatusUnauthorized, "missing or unknown API token")
			return
		}
		if !tk.Role.Allows(need) {
			a.hub.log.Info("api forbidden", "who", tk.Name, "role", tk.Role, "need", need, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, fmt.Sprintf("role %s may not %s %s (needs %s)", tk.Role, r.Method, r.URL.Path, need))
			return
		}
		if err := fn(w, r, tk); err != nil {
			code := statusOf(err)
			if code >= 500 {
				a.hub.log.Error("api request failed", "who", tk.Name, "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, code, err.Error())
		}
	})
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrExists), errors.Is(err, ErrInUse), errors.Is(err, ErrFinished):
		return http.StatusConflict
	case errors.Is(err, ErrTooLarge), errors.Is(err, bundle.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, bundle.ErrUnknownKey), errors.Is(err, bundle.ErrSignature),
		errors.Is(err, bundle.ErrRevokedKey), errors.Is(err, bundle.ErrThreshold):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrBadRequest), errors.Is(err, bundle.ErrMalformed), errors.Is(err, bundle.ErrTruncated),
		errors.Is(err, bundle.ErrCorruptChunk), errors.Is(err, bundle.ErrUnsupportedVersion):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---- bundles

// UploadResponse is the body of a successful upload.
type UploadResponse struct {
	Bundle BundleRecord `json:"bundle"`
	Stats  UploadStats  `json:"stats"`
}

func (a *API) upload(w http.ResponseWriter, r *http.Request, who Token) error {
	rec, st, err := a.hub.Upload(r.Context(), who.Name, r.Body, a.maxUpload)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, UploadResponse{Bundle: *rec, Stats: *st})
	return nil
}

func (a *API) listBundles(w http.ResponseWriter, r *http.Request, _ Token) error {
	bs, err := a.hub.store.Bundles(r.Context())
	if err != nil {
		return err
	}
	if bs == nil {
		bs = []BundleRecord{}
	}
	return writeJSON(w, http.StatusOK, bs)
}

// BundleDetail is the body of GET /api/v1/bundles/{name}/{version}.
type BundleDetail struct {
	BundleRecord
	Manifest    *bundle.Manifest `json:"manifest,omitempty"`
	Chunks      int              `json:"chunks"`
	StoredBytes int64            `json:"stored_bytes"`
}

func (a *API) showBundle(w http.ResponseWriter, r *http.Request, _ Token) error {
	name, version := r.PathValue("name"), r.PathValue("version")
	rec, err := a.hub.store.Bundle(r.Context(), name, version)
	if err != nil {
		return err
	}
	chunks, err := a.hub.store.BundleChunks(r.Context(), name, version)
	if err != nil {
		return err
	}
	d := BundleDetail{BundleRecord: *rec, Chunks: len(chunks)}
	for _, c := range chunks {
		d.StoredBytes += c.Size
	}
	if m, err := bundle.VerifyManifest(rec.Manifest, a.hub.opt.Trust); err == nil {
		d.Manifest = m
	}
	return writeJSON(w, http.StatusOK, d)
}

func (a *API) deleteBundle(w http.ResponseWriter, r *http.Request, who Token) error {
	if err := a.hub.DeleteBundle(r.Context(), who.Name, r.PathValue("name"), r.PathValue("version")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- devices

// ParseFilter parses a device filter: comma- or space-separated key=value terms with
// keys status (pending|accepted|rejected), hardware and online (true|false).
func ParseFilter(expr string) (DeviceFilter, error) {
	var f DeviceFilter
	for _, term := range strings.FieldsFunc(expr, func(r rune) bool { return r == ',' || r == ' ' }) {
		k, v, ok := strings.Cut(term, "=")
		if !ok || v == "" {
			return f, fmt.Errorf("filter term %q: want key=value: %w", term, ErrBadRequest)
		}
		switch k {
		case "status":
			f.Status = DeviceStatus(v)
			if !f.Status.Valid() {
				return f, fmt.Errorf("filter status=%q: want pending, accepted or rejected: %w", v, ErrBadRequest)
			}
		case "hardware", "hw":
			f.Hardware = v
		case "online":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return f, fmt.Errorf("filter online=%q: want true or false: %w", v, ErrBadRequest)
			}
			f.Online = &b
		default:
			return f, fmt.Errorf("filter key %q: want status, hardware or online: %w", k, ErrBadRequest)
		}
	}
	return f, nil
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request, _ Token) error {
	f, err := ParseFilter(r.URL.Query().Get("filter"))
	if err != nil {
		return err
	}
	ds, err := a.hub.store.Devices(r.Context(), f)
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []Device{}
	}
	return writeJSON(w, http.StatusOK, ds)
}

// DeviceDetail is the body of GET /api/v1/devices/{id}.
type DeviceDetail struct {
	Device
	Deployments []Deployment `json:"deployments"`
}

func (a *API) showDevice(w http.ResponseWriter, r *http.Request, _ Token) error {
	d, err := a.hub.store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	deps, err := a.hub.store.Deployments(r.Context(), d.ID, false)
	if err != nil {
		return err
	}
	if deps == nil {
		deps = []Deployment{}
	}
	return writeJSON(w, http.StatusOK, DeviceDetail{Device: *d, Deployments: deps})
}

func (a *API) setStatus(s DeviceStatus) func(http.ResponseWriter, *http.Request, Token) error {
	return func(w http.ResponseWriter, r *http.Request, who Token) error {
		id := r.PathValue("id")
		if err := a.hub.SetStatus(r.Context(), who.Name, id, s); err != nil {
			return err
		}
		d, err := a.hub.store.Device(r.Context(), id)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, d)
	}
}

// ---- deployments

// DeployRequest is the body of POST /api/v1/deployments.
type DeployRequest struct {
	Bundle  string `json:"bundle"`
	Version string `json:"version"`
	Device  string `json:"device"`
	// Reboot is when the device reboots into the installed update: "now"
	// (default, ""), "window" (inside a maintenance window) or "hub" (when
	// POST /api/v1/devices/{id}/reboot says so; the deployment waits in state
	// "waiting-reboot"). A device configured with a stricter policy of its own
	// (window or hub) keeps it.
	Reboot string `json:"reboot,omitempty"`
	// Window, with reboot "window": cron "minute hour day-of-month month
	// day-of-week" of the window's start, in the device's time zone; "" uses
	// the window configured on the device (a device without one reboots now).
	Window string `json:"window,omitempty"`
	// WindowLength is the window's length in seconds, required with Window.
	WindowLength int64 `json:"window_length,omitempty"`
}

func (a *API) deploy(w http.ResponseWriter, r *http.Request, who Token) error {
	var req DeployRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("decode deployment request: %v: %w", err, ErrBadRequest)
	}
	if req.Bundle == "" || req.Version == "" || req.Device == "" {
		return fmt.Errorf("deployment request needs bundle, version and device: %w", ErrBadRequest)
	}
	d, err := a.hub.DeployWith(r.Context(), who.Name, req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, d)
}

func (a *API) cancelDeployment(w http.ResponseWriter, r *http.Request, who Token) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return fmt.Errorf("deployment id %q: %w", r.PathValue("id"), ErrBadRequest)
	}
	d, err := a.hub.Cancel(r.Context(), who.Name, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}

func (a *API) command(fn func(ctx context.Context, actor, device string) (*CommandResult, error)) func(http.ResponseWriter, *http.Request, Token) error {
	return func(w http.ResponseWriter, r *http.Request, who Token) error {
		res, err := fn(r.Context(), who.Name, r.PathValue("id"))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusAccepted, res)
	}
}

func (a *API) showDeployment(w http.ResponseWriter, r *http.Request, _ Token) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return fmt.Errorf("deployment id %q: %w", r.PathValue("id"), ErrBadRequest)
	}
	d, err := a.hub.store.Deployment(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}

// AuditResponse is the body of GET /api/v1/audit.
type AuditResponse struct {
	Entries  []AuditEntry `json:"entries"`
	Verified bool         `json:"verified"`          // the whole chain verified
	Problem  string       `json:"problem,omitempty"` // why it did not
}

func (a *API) audit(w http.ResponseWriter, r *http.Request, _ Token) error {
	q := r.URL.Query()
	after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
	limit, _ := strconv.Atoi(q.Get("limit"))
	all, err := a.hub.store.Audit(r.Context(), 0, 0)
	if err != nil {
		return err
	}
	resp := AuditResponse{Verified: true, Entries: []AuditEntry{}}
	if err := VerifyAudit(all); err != nil {
		resp.Verified, resp.Problem = false, err.Error()
		a.hub.log.Error("audit log does not verify", "err", err)
	}
	for _, e := range all {
		if e.Seq > after && (limit <= 0 || len(resp.Entries) < limit) {
			resp.Entries = append(resp.Entries, e)
		}
	}
	return writeJSON(w, http.StatusOK, resp)
}
