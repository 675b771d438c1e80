package hub

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/autopatcher/autopatcher/transport"
)

// Registry errors.
var (
	ErrDenied     = errors.New("hub: connection denied")
	ErrBadRequest = errors.New("hub: bad request")
)

// HashCredential returns the stored form of a device password: "salt:sha256(salt||password)".
// Device credentials are random tokens, so a fast hash with a salt is sufficient.
func HashCredential(password []byte) string {
	var salt [16]byte
	rand.Read(salt[:])
	return hashWithSalt(salt[:], password)
}

func hashWithSalt(salt, password []byte) string {
	h := sha256.New()
	h.Write(salt)
	h.Write(password)
	return hex.EncodeToString(salt) + ":" + hex.EncodeToString(h.Sum(nil))
}

func checkCredential(stored string, password []byte) bool {
	s, _, ok := strings.Cut(stored, ":")
	if !ok {
		return false
	}
	salt, err := hex.DecodeString(s)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(hashWithSalt(salt, password)), []byte(stored)) == 1
}

// Admit authenticates a connecting MQTT client (the broker's Gate). A device's
// identity is its client certificate's common name, or its user name when it has no
// certificate; either must equal its client id. A device seen for the first time is
// stored as pending (its credential or certificate pinned), or accepted at once when
// its certificate chains to the configured device CA. Rejected devices are refused.
func (h *Hub) Admit(id Identity) error {
	ctx := context.Background()
	if transport.IsHub(id.ClientID) {
		if h.opt.HubPassword == "" || id.Username != id.ClientID ||
			subtle.ConstantTimeCompare(id.Password, []byte(h.opt.HubPassword)) != 1 {
			return fmt.Errorf("client %q: hub identity without the hub credential: %w", id.ClientID, ErrDenied)
		}
		return nil
	}
	if err := transport.ValidDevice(id.ClientID); err != nil {
		return fmt.Errorf("%w: %w", ErrDenied, err)
	}
	var fp string
	chained := false
	if len(id.Certs) > 0 {
		leaf := id.Certs[0]
		if leaf.Subject.CommonName != id.ClientID {
			return fmt.Errorf("client %q: certificate common name %q differs: %w", id.ClientID, leaf.Subject.CommonName, ErrDenied)
		}
		sum := sha256.Sum256(leaf.Raw)
		fp = hex.EncodeToString(sum[:])
		chained = h.chainsToCA(id.Certs)
	} else {
		if h.opt.RequireCerts {
			return fmt.Errorf("client %q: no client certificate: %w", id.ClientID, ErrDenied)
		}
		if id.Username != id.ClientID || len(id.Password) == 0 {
			return fmt.Errorf("client %q: user name must equal the client id and a password is required: %w", id.ClientID, ErrDenied)
		}
	}

	d, err := h.store.Device(ctx, id.ClientID)
	if errors.Is(err, ErrNotFound) {
		d = &Device{ID: id.ClientID, Status: StatusPending, CertSHA256: fp, LastSeen: now().UTC()}
		if chained {
			d.Status = StatusAccepted
		}
		if fp == "" {
			d.CredentialHash = HashCredential(id.Password)
		}
		err = h.store.PutDevice(ctx, d)
		if errors.Is(err, ErrExists) {
			return h.Admit(id) // lost a race with another first connection; check it again
		}
		if err != nil {
			return fmt.Errorf("register device %s: %w", id.ClientID, err)
		}
		h.log.Info("device registered", "device", d.ID, "status", d.Status)
		h.audit(ctx, "device:"+d.ID, "device.register", d.ID, string(d.Status))
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up device %s: %w", id.ClientID, err)
	}
	if d.Status == StatusRejected {
		return fmt.Errorf("device %s: rejected by an operator: %w", d.ID, ErrDenied)
	}
	switch {
	case fp != "" && d.CertSHA256 == fp:
	case fp != "" && chained:
		// A new certificate from the fleet CA (rotation) replaces the pinned one.
	case fp != "":
		return fmt.Errorf("device %s: certificate differs from the one registered: %w", d.ID, ErrDenied)
	case d.CredentialHash == "" || !checkCredential(d.CredentialHash, id.Password):
		return fmt.Errorf("device %s: wrong credential: %w", d.ID, ErrDenied)
	}
	if fp == "" || d.CertSHA256 == fp && !(chained && d.Status == StatusPending) {
		return nil // no new certificate or status to record; Connected sets last seen once the session is up
	}
	return h.store.UpdateDevice(ctx, d.ID, func(d *Device) error {
		d.CertSHA256 = fp
		if chained && d.Status == StatusPending {
			d.Status = StatusAccepted
		}
		d.LastSeen = now().UTC()
		return nil
	})
}

func (h *Hub) chainsToCA(certs []*x509.Certificate) bool {
	if h.opt.DeviceCA == nil {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         h.opt.DeviceCA,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

// Connected marks a device online.
func (h *Hub) Connected(clientID string) { h.setOnline(clientID, true) }

// Disconnected marks a device offline.
func (h *Hub) Disconnected(clientID string) { h.setOnline(clientID, false) }

func (h *Hub) setOnline(id string, online bool) {
	if transport.IsHub(id) {
		return
	}
	err := h.store.UpdateDevice(context.Background(), id, func(d *Device) error {
		d.Online = online
		d.LastSeen = now().UTC()
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		h.log.Error("update device presence", "device", id, "err", err)
	}
}

// onHello updates a device's inventory. With an external broker the hub learns of a
// device only here, so an unknown device is registered as pending.
func (h *Hub) onHello(ctx context.Context, device string, m transport.Message) {
	hello := m.(*transport.Hello)
	if hello.Device != "" && hello.Device != device {
		h.log.Warn("dropped hello naming another device", "topic_device", device, "hello_device", hello.Device)
		return
	}
	inv := Inventory{Trial: hello.Trial, Agent: hello.Daemon}
	for _, s := range hello.Slots {
		if inv.Slots == nil {
			inv.Slots = map[string]string{}
		}
		key := s.Name
		if s.Class != "" {
			key = s.Class + "/" + s.Name
		}
		inv.Slots[key] = s.Version
		if s.Booted {
			inv.Booted = s.Name
		}
	}
	for _, c := range hello.Components {
		if inv.Components == nil {
			inv.Components = map[string]string{}
		}
		inv.Components[c.Name] = c.Version
	}
	update := func(d *Device) error {
		d.Hardware = hello.Hardware
		d.Inventory = inv
		if hello.LastResult != "" {
			d.LastResult = hello.LastResult
			if hello.LastKind != "" {
				d.LastResult += " (" + string(hello.LastKind) + ")"
			}
		}
		d.LastSeen = now().UTC()
		d.Online = true
		return nil
	}
	err := h.store.UpdateDevice(ctx, device, update)
	if errors.Is(err, ErrNotFound) {
		d := &Device{ID: device, Status: StatusPending}
		update(d)
		if err = h.store.PutDevice(ctx, d); err == nil {
			h.audit(ctx, "device:"+device, "device.register", device, string(StatusPending))
		}
	}
	if err != nil {
		h.log.Error("store hello", "device", device, "err", err)
		return
	}
	h.log.Debug("hello", "device", device, "hardware", hello.Hardware)
}

// SetStatus accepts or rejects a device on behalf of actor.
func (h *Hub) SetStatus(ctx context.Context, actor, id string, s DeviceStatus) error {
	if !s.Valid() {
		return fmt.Errorf("set status of %s: %q: %w", id, s, ErrBadRequest)
	}
	if err := h.store.SetDeviceStatus(ctx, id, s); err != nil {
		return err
	}
	action := "device.accept"
	if s == StatusRejected {
		action = "device.reject"
		// A rejected device loses its connection now, not at its next reconnect.
		h.mu.Lock()
		k, ok := h.bus.(interface{ Kick(string) })
		h.mu.Unlock()
		if ok {
			k.Kick(id)
		}
	}
	return h.audit(ctx, actor, action, id, "")
}

// resetPresence marks every device offline (at start, before the broker accepts anyone).
func (h *Hub) resetPresence(ctx context.Context) error {
	yes := true
	ds, err := h.store.Devices(ctx, DeviceFilter{Online: &yes})
	if err != nil {
		return err
	}
	for _, d := range ds {
		h.setOnline(d.ID, false)
	}
	return nil
}
