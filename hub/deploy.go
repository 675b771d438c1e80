package hub

import (
	"bytes"
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

// MaxWindow caps how many chunks the hub sends for one Get, whatever the device asks.
const MaxWindow = 64

// activeOffer is the offer a device may fetch chunks for, with its chunk table.
type activeOffer struct {
	dep      int64
	id       string
	digest   []byte
	manifest []byte
	keys     [][]string // component → chunk index → chunk key
	last     string     // last recorded step state
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

// Deploy offers bundle name@version to one accepted device on behalf of actor: it
// records a deployment, replaces any earlier active deployment of that device, and
// publishes a retained Offer on the device's offer topic.
func (h *Hub) Deploy(ctx context.Context, actor, name, version, device string) (*Deployment, error) {
	rec, err := h.store.Bundle(ctx, name, version)
	if err != nil {
		return nil, err
	}
	d, err := h.store.Device(ctx, device)
	if err != nil {
		return nil, err
	}
	if d.Status != StatusAccepted {
		return nil, fmt.Errorf("deploy to %s: device is %s, not accepted: %w", device, d.Status, ErrBadRequest)
	}
	m, err := bundle.VerifyManifest(rec.Manifest, h.opt.Trust)
	if err != nil {
		return nil, fmt.Errorf("deploy %s@%s: stored manifest no longer verifies: %w", name, version, err)
	}
	if len(m.Compatible) > 0 && d.Hardware != "" && !slices.Contains(m.Compatible, d.Hardware) {
		return nil, fmt.Errorf("deploy %s@%s to %s: hardware %q is not in the bundle's compatible list %v: %w",
			name, version, device, d.Hardware, m.Compatible, ErrBadRequest)
	}
	chunks, err := h.store.BundleChunks(ctx, name, version)
	if err != nil {
		return nil, err
	}
	active, err := h.store.Deployments(ctx, device, true)
	if err != nil {
		return nil, err
	}
	dep := &Deployment{Bundle: name, Version: version, Device: device}
	if err := h.store.CreateDeployment(ctx, dep); err != nil {
		return nil, err
	}
	for _, old := range active {
		if err := h.store.AddStep(ctx, old.ID, Step{State: DeployCancelled, Detail: "superseded by deployment " + strconv.FormatInt(dep.ID, 10)}); err != nil {
			return nil, err
		}
	}
	digest, _ := hex.DecodeString(rec.Digest)
	ao := &activeOffer{dep: dep.ID, id: OfferID(dep.ID), digest: digest, manifest: rec.Manifest, keys: chunkTable(chunks), last: DeployOffered}
	var size uint64
	for _, c := range chunks {
		size += uint64(c.Size)
	}
	offer := &transport.Offer{
		ID:       ao.id,
		Bundle:   name,
		Version:  version,
		Digest:   digest,
		Size:     size,
		Issued:   now().Unix(),
		Expires:  m.Expires,
		Severity: string(m.Severity),
		Policy:   transport.Policy{Reboot: transport.RebootNow},
	}
	h.mu.Lock()
	h.offers[device] = ao
	h.mu.Unlock()
	if err := h.send(device, offer); err != nil {
		h.store.AddStep(ctx, dep.ID, Step{State: DeployFailed, Detail: "publish offer: " + err.Error()})
		return nil, fmt.Errorf("deploy to %s: publish offer: %w", device, err)
	}
	h.audit(ctx, actor, "deploy", device, fmt.Sprintf("bundle=%s@%s deployment=%d", name, version, dep.ID))
	h.log.Info("offer published", "device", device, "bundle", name, "version", version, "deployment", dep.ID)
	return h.store.Deployment(ctx, dep.ID)
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

// offerFor returns the device's active offer, loading it from the store after a restart.
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
	dep := deps[0]
	rec, err := h.store.Bundle(ctx, dep.Bundle, dep.Version)
	if err != nil {
		return nil, err
	}
	chunks, err := h.store.BundleChunks(ctx, dep.Bundle, dep.Version)
	if err != nil {
		return nil, err
	}
	digest, _ := hex.DecodeString(rec.Digest)
	ao = &activeOffer{dep: dep.ID, id: OfferID(dep.ID), digest: digest, manifest: rec.Manifest, keys: chunkTable(chunks), last: dep.State}
	h.mu.Lock()
	if h.offers[device] == nil {
		h.offers[device] = ao
	} else {
		ao = h.offers[device]
	}
	h.mu.Unlock()
	return ao, nil
}

// onGet serves the signed manifest or chunks of the device's active offer, and
// nothing else: a request for any other offer is answered with "not-offered".
func (h *Hub) onGet(ctx context.Context, device string, m transport.Message) {
	g := m.(*transport.Get)
	reply := func(d *transport.Data) {
		d.Offer, d.Seq = g.Offer, g.Seq
		if err := h.send(device, d); err != nil {
			h.log.Error("publish data", "device", device, "err", err)
		}
	}
	refuse := func(kind transport.ErrorKind, detail string) {
		h.log.Info("chunk request refused", "device", device, "offer", g.Offer, "kind", kind, "detail", detail)
		reply(&transport.Data{Comp: g.Comp, Index: g.Base, Err: kind, Detail: detail})
	}
	d, err := h.store.Device(ctx, device)
	if err != nil || d.Status != StatusAccepted {
		refuse(transport.KindNotOffered, "device not accepted")
		return
	}
	ao, err := h.offerFor(ctx, device)
	if err != nil {
		refuse(transport.KindInternal, "read store")
		return
	}
	if ao == nil || ao.id != g.Offer || (len(g.Digest) > 0 && !bytes.Equal(g.Digest, ao.digest)) {
		refuse(transport.KindNotOffered, "no such offer for this device")
		return
	}
	if g.Manifest {
		reply(&transport.Data{Manifest: true, Bytes: ao.manifest})
		return
	}
	if int(g.Comp) >= len(ao.keys) {
		refuse(transport.KindNotFound, fmt.Sprintf("component %d of %d", g.Comp, len(ao.keys)))
		return
	}
	keys := ao.keys[g.Comp]
	window := int(g.Window)
	if window <= 0 || window > MaxWindow {
		window = MaxWindow
	}
	sent := 0
	for i := 0; i < len(g.Bitmap)*8 && sent < window; i++ {
		if g.Bitmap[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		idx := int(g.Base) + i
		if idx >= len(keys) {
			refuse(transport.KindNotFound, fmt.Sprintf("component %d chunk %d of %d", g.Comp, idx, len(keys)))
			return
		}
		b, err := h.opt.Chunks.Get(keys[idx])
		if err != nil {
			h.log.Error("read chunk", "key", keys[idx], "err", err)
			refuse(transport.KindInternal, "read chunk")
			return
		}
		reply(&transport.Data{Comp: g.Comp, Index: uint32(idx), Bytes: b})
		sent++
	}
}

// onStatus records a device's progress on its deployment. A new state becomes a
// step; a result ends the deployment and withdraws the retained offer.
func (h *Hub) onStatus(ctx context.Context, device string, m transport.Message) {
	st := m.(*transport.Status)
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
	state := st.State
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
	if state != "" && state != last {
		if err := h.store.AddStep(ctx, depID, Step{State: state, Detail: detail}); err != nil {
			h.log.Error("record step", "deployment", depID, "err", err)
			return
		}
	}
	if final == "" {
		return
	}
	if err := h.store.AddStep(ctx, depID, Step{State: final, Detail: detail}); err != nil {
		h.log.Error("record step", "deployment", depID, "err", err)
		return
	}
	h.store.UpdateDevice(ctx, device, func(d *Device) error {
		d.LastResult = final
		return nil
	})
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
