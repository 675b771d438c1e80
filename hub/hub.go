package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/transport"
)

// Options configures a Hub.
type Options struct {
	Store  Store
	Chunks *Chunks
	Trust  *bundle.Trust // vendor keys a bundle must be signed with to be uploaded
	// DeviceCA, when set, auto-accepts devices whose client certificate chains to it.
	DeviceCA *x509.CertPool
	// RequireCerts refuses devices that connect without a client certificate.
	RequireCerts bool
	// HubPassword lets a remote client connect to the embedded broker as the hub
	// identity (transport.Hub); empty refuses every such client.
	HubPassword string
	// TempDir holds uploads while they are verified (default: the system temp dir).
	TempDir string
	Log     *slog.Logger
}

// Hub is the fleet server: bundle repository, device registry and deployments.
// It talks to devices through a Bus, and is driven by the HTTP API.
type Hub struct {
	opt   Options
	store Store
	log   *slog.Logger

	chunkMu sync.Mutex // orders chunk writes of uploads against chunk removal of deletes

	mu  sync.Mutex
	bus Bus
	// offers caches, per device, the active offer and its chunk table; byID the same by offer id.
	offers map[string]*activeOffer
	byID   map[string]*activeOffer

	ctx    context.Context // lives until Close: the chunk server's workers
	cancel context.CancelFunc
	// Chunks serves devices' chunk requests (transport.Server over the chunk directory).
	Chunks *transport.Server
}

// New creates a Hub. Attach it to a Bus with Attach before devices connect.
func New(opt Options) (*Hub, error) {
	if opt.Store == nil || opt.Chunks == nil {
		return nil, errors.New("create hub: store and chunk store are required")
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	h := &Hub{opt: opt, store: opt.Store, log: opt.Log, offers: map[string]*activeOffer{}, byID: map[string]*activeOffer{}}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

// Close stops the chunk server's workers.
func (h *Hub) Close() error {
	h.cancel()
	return nil
}

// Store returns the hub's store.
func (h *Hub) Store() Store { return h.store }

// Attach subscribes the hub to device messages on bus.
func (h *Hub) Attach(bus Bus) error {
	h.mu.Lock()
	h.bus = bus
	h.mu.Unlock()
	handlers := map[transport.Channel]func(ctx context.Context, device string, m transport.Message){
		transport.ChHello:  h.onHello,
		transport.ChStatus: h.onStatus,
	}
	for ch, fn := range handlers {
		err := bus.Receive(ch, func(device string, m transport.Message) { fn(context.Background(), device, m) })
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", ch, err)
		}
	}
	h.Chunks = transport.NewServer(busLink{bus}, chunkSource{h}, h.offered, transport.ServeOptions{Logger: h.log})
	return h.Chunks.Start(h.ctx)
}

func (h *Hub) send(device string, m transport.Message) error {
	h.mu.Lock()
	bus := h.bus
	h.mu.Unlock()
	if bus == nil {
		return errors.New("send: hub not attached to a broker")
	}
	return bus.Send(device, m)
}

// audit records a state-changing action; failures are logged, never hidden.
func (h *Hub) audit(ctx context.Context, actor, action, target, detail string) error {
	err := h.store.AppendAudit(ctx, &AuditEntry{Actor: actor, Action: action, Target: target, Detail: detail})
	if err != nil {
		h.log.Error("audit write failed", "action", action, "target", target, "err", err)
	}
	return err
}
