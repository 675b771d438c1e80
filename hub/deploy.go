package hub

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/transport"
)

// activeOffer is the offer a device may fetch chunks for, with its chunk table.
type activeOffer struct {
	dep      int64
	device   string
	id       string
	digest   []byte
	manifest []byte
	keys     [][]string // component → chunk index → chunk key
}

// OfferID is the offer id the hub uses for deployment id.
func OfferID(dep int64) string { return "dep-" + strconv.FormatInt(dep, 10) }

func parseOfferID(s string) (int64, bool) {
	n, ok := strings.CutPrefix(s, "dep-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(n, 10, 64)
	return id, err == nil && id > 0
}

// DeployWith offers req.Bundle@req.Version to one accepted device on behalf of
// actor: it records a deployment, replaces any earlier active deployment of that
// device, and publishes a retained Offer, carrying req's reboot policy, on the
// device's offer topic.
func (h *Hub) DeployWith(ctx context.Context, actor string, req DeployRequest) (*Deployment, error) {
	name, version, device := req.Bundle, req.Version, req.Device
	policy, err := req.Policy()
	if err != nil {
		return nil, err
	}
	dep, ao, offer, err := h.prepare(ctx, name, version, device, policy)
	if err != nil {
		return nil, err
	}
	h.cacheOffer(ao)
	if err := h.send(device, offer); err != nil {
		h.store.AddStep(ctx, dep.ID, Step{State: DeployFailed, Detail: "publish offer: " + err.Error()})
		return nil, fmt.Errorf("deploy to %s: publish offer: %w", device, err)
	}
	h.audit(ctx, actor, "deploy", device, fmt.Sprintf("bundle=%s@%s deployment=%d %s", name, version, dep.ID, policyDetail(policy)))
	h.log.Info("offer published", "device", device, "bundle", name, "version", version, "deployment", dep.ID)
	return h.store.Deployment(ctx, dep.ID)
}

// prepare checks a deployment and records it, superseding the device's active one.
// It holds chunkMu, so the bundle cannot be deleted in between and two deployments
// to one device cannot both stay active.
func (h *Hub) prepare(ctx context.Context, name, version, device string, policy transport.Policy) (*Deployment, *activeOffer, *transport.Offer, error) {
	h.chunkMu.Lock()
	defer h.chunkMu.Unlock()
	rec, err := h.store.Bundle(ctx, name, version)
	if err != nil {
		return nil, nil, nil, err
	}
	d, err := h.store.Device(ctx, device)
	if err != nil {
		return nil, nil, nil, err
	}
	if d.Status != StatusAccepted {
		return nil, nil, nil, fmt.Errorf("deploy to %s: device is %s, not accepted: %w", device, d.Status, ErrBadRequest)
	}
	m, err := bundle.VerifyManifest(rec.Manifest, h.opt.Trust)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("deploy %s@%s: stored manifest no longer verifies: %w", name, version, err)
	}
	if len(m.Compatible) > 0 && d.Hardware != "" && !slices.Contains(m.Compatible, d.Hardware) {
		return nil, nil, nil, fmt.Errorf("deploy %s@%s to %s: hardware %q is not in the bundle's compatible list %v: %w",
			name, version, device, d.Hardware, m.Compatible, ErrBadRequest)
	}
	chunks, err := h.store.BundleChunks(ctx, name, version)
	if err != nil {
		return nil, nil, nil, err
	}
	active, err := h.store.Deployments(ctx, device, true)
	if err != nil {
		return nil, nil, nil, err
	}
	dep := &Deployment{Bundle: name, Version: version, Device: device, Steps: []Step{{State: DeployOffered, Detail: policyDetail(policy)}}}
	if err := h.store.CreateDeployment(ctx, dep); err != nil {
		return nil, nil, nil, err
	}
	for _, old := range active {
		if err := h.store.AddStep(ctx, old.ID, Step{State: DeployCancelled, Detail: "superseded by deployment " + strconv.FormatInt(dep.ID, 10)}); err != nil {
			return nil, nil, nil, err
		}
	}
	ao := newActiveOffer(dep.ID, device, rec, chunks)
	var size uint64
	for _, c := range chunks {
		size += uint64(c.Size)
	}
	offer := &transport.Offer{
		ID:       ao.id,
		Bundle:   name,
		Version:  version,
		Digest:   ao.digest,
		Size:     size,
		Issued:   now().Unix(),
		Expires:  m.Expires,
		Severity: string(m.Severity),
		Policy:   policy,
	}
	return dep, ao, offer, nil
}

// newActiveOffer builds the offer of deployment dep to device from its bundle.
func newActiveOffer(dep int64, device string, rec *BundleRecord, chunks []ChunkRef) *activeOffer {
	digest, _ := hex.DecodeString(rec.Digest)
	return &activeOffer{dep: dep, device: device, id: OfferID(dep), digest: digest, manifest: rec.Manifest, keys: chunkTable(chunks)}
}

// cacheOffer makes ao its device's cached offer unless the cache already holds
// the offer of a later deployment, and returns the cached one.
func (h *Hub) cacheOffer(ao *activeOffer) *activeOffer {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur := h.offers[ao.device]; cur != nil {
		if cur.dep >= ao.dep {
			return cur
		}
		delete(h.byID, cur.id)
	}
	h.offers[ao.device] = ao
	h.byID[ao.id] = ao
	return ao
}

func chunkTable(refs []ChunkRef) [][]string {
	var t [][]string
	for _, r := range refs {
		for len(t) <= r.Component {
			t = append(t, nil)
		}
		for len(t[r.Component]) <= r.Index {
			t[r.Component] = append(t[r.Component], "")
		}
		t[r.Component][r.Index] = r.Key
	}
	return t
}

// offerFor returns the device's active offer (nil when none), loading it from the
// store after a restart.
func (h *Hub) offerFor(ctx context.Context, device string) (*activeOffer, error) {
	h.mu.Lock()
	ao := h.offers[device]
	h.mu.Unlock()
	if ao != nil {
		return ao, nil
	}
	deps, err := h.store.Deployments(ctx, device, true)
	if err != nil || len(deps) == 0 {
		return nil, err
	}
	return h.loadOffer(ctx, &deps[0])
}

// offerByID returns the active offer with id offerID, or nil.
func (h *Hub) offerByID(ctx context.Context, offerID string) (*activeOffer, error) {
	h.mu.Lock()
	ao := h.byID[offerID]
	h.mu.Unlock()
	if ao != nil {
		return ao, nil
	}
	id, ok := parseOfferID(offerID)
	if !ok {
		return nil, nil
	}
	dep, err := h.store.Deployment(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if Final(dep.State) {
		return nil, nil
	}
	return h.loadOffer(ctx, dep)
}

func (h *Hub) loadOffer(ctx context.Context, dep *Deployment) (*activeOffer, error) {
	rec, err := h.store.Bundle(ctx, dep.Bundle, dep.Version)
	if err != nil {
		return nil, err
	}
	chunks, err := h.store.BundleChunks(ctx, dep.Bundle, dep.Version)
	if err != nil {
		return nil, err
	}
	return h.cacheOffer(newActiveOffer(dep.ID, dep.Device, rec, chunks)), nil
}

// offered is the chunk server's gate: offerID is the active offer of device, and
// the device is accepted.
func (h *Hub) offered(device, offerID string) bool {
	ctx := context.Background()
	d, err := h.store.Device(ctx, device)
	if err != nil || d.Status != StatusAccepted {
		return false
	}
	ao, err := h.offerFor(ctx, device)
	return err == nil && ao != nil && ao.id == offerID
}

// chunkSource is the transport.ChunkStore of the chunk server: the stored bytes of
// active offers, read from the chunk directory.
type chunkSource struct{ h *Hub }

func (c chunkSource) Manifest(offerID string) ([]byte, error) {
	ao, err := c.h.offerByID(context.Background(), offerID)
	if err != nil {
		return nil, err
	}
	if ao == nil {
		return nil, fmt.Errorf("offer %s: %w", offerID, transport.ErrNotFound)
	}
	return ao.manifest, nil
}

func (c chunkSource) Chunk(offerID string, comp, idx int) ([]byte, error) {
	ao, err := c.h.offerByID(context.Background(), offerID)
	if err != nil {
		return nil, err
	}
	if ao == nil {
		return nil, fmt.Errorf("offer %s: %w", offerID, transport.ErrNotFound)
	}
	if comp < 0 || comp >= len(ao.keys) || idx < 0 || idx >= len(ao.keys[comp]) {
		return nil, fmt.Errorf("offer %s: component %d chunk %d: %w", offerID, comp, idx, transport.ErrNotFound)
	}
	b, err := c.h.opt.Chunks.Get(ao.keys[comp][idx])
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("offer %s: component %d chunk %d missing from the chunk store", offerID, comp, idx)
	}
	return b, err
}

// busLink lets the transport's chunk Server publish and subscribe through a Bus.
type busLink struct{ bus Bus }

func (l busLink) Publish(_ context.Context, topic string, m transport.Message) error {
	device, _, err := transport.ParseTopic(topic)
	if err != nil {
		return err
	}
	return l.bus.Send(device, m)
}

func (l busLink) Subscribe(filter string, fn transport.Handler) error {
	if filter != transport.Filter(transport.ChGet) {
		return fmt.Errorf("subscribe %s: the hub routes only chunk requests to the chunk server", filter)
	}
	return l.bus.Receive(transport.ChGet, func(device string, m transport.Message) {
		topic, err := transport.Topic(device, transport.ChGet)
		if err == nil {
			fn(topic, m)
		}
	})
}

// onStatus records a device's progress on its deployment. A new state becomes a
// step; a result ends the deployment and withdraws the retained offer.
func (h *Hub) onStatus(ctx context.Context, device string, m transport.Message) {
	st := m.(*transport.Status)
	h.setOnline(device, true) // any message is a sign of life (the only one behind an external broker)
	depID, ok := parseOfferID(st.Offer)
	if !ok {
		h.log.Debug("status without a hub offer", "device", device, "state", st.State)
		return
	}
	dep, err := h.store.Deployment(ctx, depID)
	if err != nil || dep.Device != device {
		h.log.Warn("status for an unknown deployment", "device", device, "offer", st.Offer)
		return
	}
	if Final(dep.State) {
		return
	}
	state := st.State // "waiting-window" is DeployWaitingWindow as it stands
	if state == deviceWaitingHub {
		state = DeployWaitingReboot
	}
	final := ""
	switch strings.ToLower(st.Result) {
	case "":
	case "success", "succeeded", "ok":
		final = DeploySucceeded
	case "rollback", "rolled-back", "rolledback":
		final = DeployRolledBack
	default:
		final = DeployFailed
	}
	last := dep.State
	if state == "" && final == "" || state == last && final == "" {
		return // progress within a state
	}
	detail := statusDetail(st)
	if state != "" && state != last && state != final { // a device state named like the result is recorded once
		if err := h.store.AddStep(ctx, depID, Step{State: state, Detail: detail}); err != nil {
			h.log.Error("record step", "deployment", depID, "err", err)
			return
		}
	}
	if final == "" {
		return
	}
	// The device's last result first: whoever sees the deployment finished sees it too.
	if err := h.store.UpdateDevice(ctx, device, func(d *Device) error {
		d.LastResult = final
		return nil
	}); err != nil {
		h.log.Error("record last result", "device", device, "err", err)
	}
	if err := h.store.AddStep(ctx, depID, Step{State: final, Detail: detail}); err != nil {
		h.log.Error("record step", "deployment", depID, "err", err)
		return
	}
	h.withdraw(device, depID)
	h.log.Info("deployment finished", "device", device, "deployment", depID, "result", final, "detail", detail)
}

func statusDetail(st *transport.Status) string {
	var parts []string
	if st.Result != "" {
		parts = append(parts, "result="+st.Result)
	}
	if st.Kind != "" {
		parts = append(parts, "kind="+string(st.Kind))
	}
	if st.Component != "" {
		parts = append(parts, fmt.Sprintf("component=%s %d/%d", st.Component, st.Done, st.Total))
	}
	if st.Reason != "" {
		parts = append(parts, st.Reason)
	}
	return strings.Join(parts, " ")
}

// withdraw clears the retained offer of a finished deployment.
func (h *Hub) withdraw(device string, depID int64) {
	h.mu.Lock()
	if ao := h.offers[device]; ao != nil && ao.dep == depID {
		delete(h.offers, device)
		delete(h.byID, ao.id)
	}
	bus := h.bus
	h.mu.Unlock()
	if bus == nil {
		return
	}
	if err := bus.Withdraw(device); err != nil && !errors.Is(err, transport.ErrClosed) {
		h.log.Error("withdraw offer", "device", device, "err", err)
	}
}

// deviceWaitingHub is the device agent's Status state for an installed update,
// trial slot set, waiting for Cmd reboot; the hub records it as DeployWaitingReboot.
const deviceWaitingHub = "waiting-hub"

// Policy checks the reboot policy of a deployment request and returns the
// offer's Policy. Reboot "" means "now". Window (cron "m h dom mon dow") and
// WindowLength go only with reboot "window", and must parse as the device
// parses them (transport.Policy.CheckWindow); an empty Window leaves the
// device's own configured window in force.
func (r DeployRequest) Policy() (transport.Policy, error) {
	p := transport.Policy{Reboot: r.Reboot}
	switch r.Reboot {
	case "", transport.RebootNow:
		p.Reboot = transport.RebootNow
	case transport.RebootHub:
	case transport.RebootWindow:
		if r.Window == "" {
			if r.WindowLength != 0 {
				return p, fmt.Errorf("deployment request: window_length without window: %w", ErrBadRequest)
			}
			return p, nil
		}
		if n := len(strings.Fields(r.Window)); n != 5 {
			return p, fmt.Errorf("deployment request: window %q has %d fields, want cron \"minute hour day-of-month month day-of-week\": %w", r.Window, n, ErrBadRequest)
		}
		if r.WindowLength <= 0 {
			return p, fmt.Errorf("deployment request: window %q needs window_length (seconds, > 0): %w", r.Window, ErrBadRequest)
		}
		p.Window, p.WindowLength = strings.Join(strings.Fields(r.Window), " "), r.WindowLength
		// The device parses the window only once the image is written;
		// refuse here what it would refuse then.
		if err := p.CheckWindow(); err != nil {
			return transport.Policy{Reboot: r.Reboot}, fmt.Errorf("deployment request: window %q for %ds: %v: %w", r.Window, r.WindowLength, err, ErrBadRequest)
		}
		return p, nil
	default:
		return p, fmt.Errorf("deployment request: reboot %q, want now, window or hub: %w", r.Reboot, ErrBadRequest)
	}
	if r.Window != "" || r.WindowLength != 0 {
		return p, fmt.Errorf("deployment request: window is only for reboot \"window\", not %q: %w", p.Reboot, ErrBadRequest)
	}
	return p, nil
}

// policyDetail describes p in a step or audit detail.
func policyDetail(p transport.Policy) string {
	s := "reboot=" + p.Reboot
	if p.Window != "" {
		s += fmt.Sprintf(" window=%q length=%ds", p.Window, p.WindowLength)
	}
	return s
}
