package hub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/autopatcher/autopatcher/transport"
)

// ErrFinished is returned for an action on a deployment that is already over.
var ErrFinished = errors.New("hub: deployment already finished")

// CommandResult is what the hub sent to a device for a command.
type CommandResult struct {
	Device     string `json:"device"`
	Op         string `json:"op"`                   // transport.CmdReboot, CmdCancel or CmdReport
	ID         string `json:"id"`                   // command id, echoed by the device in its Status reason
	Offer      string `json:"offer,omitempty"`      // offer the command is about
	Deployment int64  `json:"deployment,omitempty"` // that offer's deployment
	State      string `json:"state,omitempty"`      // the deployment's state when the command was sent
	Online     bool   `json:"online"`               // the device was connected when the command was sent
}

var cmdSeq atomic.Uint64

// newCmdID returns a command id unique within this hub's life and across restarts.
func newCmdID() string {
	return "cmd-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(cmdSeq.Add(1), 10)
}

// Reboot asks device to reboot into its installed update now: the device acts
// on it when an update waits for the hub's word (deployment state
// DeployWaitingReboot) or for its maintenance window; otherwise it ignores it.
func (h *Hub) Reboot(ctx context.Context, actor, device string) (*CommandResult, error) {
	return h.command(ctx, actor, device, transport.CmdReboot)
}

// Report asks device to publish a fresh Hello (inventory).
func (h *Hub) Report(ctx context.Context, actor, device string) (*CommandResult, error) {
	return h.command(ctx, actor, device, transport.CmdReport)
}

func (h *Hub) command(ctx context.Context, actor, device, op string) (*CommandResult, error) {
	d, err := h.store.Device(ctx, device)
	if err != nil {
		return nil, err
	}
	res := &CommandResult{Device: device, Op: op, ID: newCmdID(), Online: d.Online}
	active, err := h.store.Deployments(ctx, device, true)
	if err != nil {
		return nil, err
	}
	if len(active) > 0 {
		res.Offer, res.Deployment, res.State = OfferID(active[0].ID), active[0].ID, active[0].State
	}
	if err := h.send(device, &transport.Cmd{ID: res.ID, Op: op, Offer: res.Offer}); err != nil {
		return nil, fmt.Errorf("send %s to %s: %w", op, device, err)
	}
	detail := "cmd=" + res.ID
	if res.Offer != "" {
		detail += fmt.Sprintf(" deployment=%d state=%s", res.Deployment, res.State)
	}
	h.audit(ctx, actor, op, device, detail)
	h.log.Info("command sent", "device", device, "op", op, "id", res.ID, "offer", res.Offer, "online", res.Online)
	return res, nil
}

// Cancel ends deployment id as DeployCancelled: the device is told to abandon
// it (Cmd cancel: a download stops and is discarded; an installed update
// waiting for its reboot is rolled back) and the retained offer is withdrawn,
// so the chunk server refuses it from now on. A finished deployment returns
// ErrFinished.
func (h *Hub) Cancel(ctx context.Context, actor string, id int64) (*Deployment, error) {
	dep, err := h.store.Deployment(ctx, id)
	if err != nil {
		return nil, err
	}
	if Final(dep.State) {
		return nil, fmt.Errorf("cancel deployment %d: it ended %s: %w", id, dep.State, ErrFinished)
	}
	cmdID := newCmdID()
	// Final first: whatever the device reports about the offer from now on is ignored.
	if err := h.store.AddStep(ctx, id, Step{State: DeployCancelled, Detail: "cancelled by " + actor + " (" + cmdID + ")"}); err != nil {
		return nil, err
	}
	sendErr := h.send(dep.Device, &transport.Cmd{ID: cmdID, Op: transport.CmdCancel, Offer: OfferID(id)})
	if sendErr != nil {
		// The withdrawn offer still stops the device's download when it next sees it.
		h.log.Warn("send cancel", "device", dep.Device, "deployment", id, "err", sendErr)
	}
	h.withdraw(dep.Device, id)
	h.audit(ctx, actor, "cancel", dep.Device, fmt.Sprintf("deployment=%d cmd=%s state=%s", id, cmdID, dep.State))
	h.log.Info("deployment cancelled", "device", dep.Device, "deployment", id, "was", dep.State)
	return h.store.Deployment(ctx, id)
}
