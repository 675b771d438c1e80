package hub

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors returned by every Store implementation.
var (
	ErrNotFound = errors.New("hub: not found")
	ErrExists   = errors.New("hub: already exists")
	ErrInUse    = errors.New("hub: in use")
)

// Store is the hub's persistent state. Callers depend only on this interface; the
// SQLite implementation is the default and a PostgreSQL one can be added beside it.
type Store interface {
	// PutBundle records a bundle and the chunks it references, atomically.
	PutBundle(ctx context.Context, b *BundleRecord, chunks []ChunkRef) error
	Bundle(ctx context.Context, name, version string) (*BundleRecord, error)
	Bundles(ctx context.Context) ([]BundleRecord, error)
	BundleChunks(ctx context.Context, name, version string) ([]ChunkRef, error)
	// DeleteBundle removes a bundle and returns the chunk keys no other bundle
	// references any more. It fails with ErrInUse while a deployment of the bundle is active.
	DeleteBundle(ctx context.Context, name, version string) (orphans []string, err error)
	// ChunkKeys lists every chunk key some bundle references.
	ChunkKeys(ctx context.Context) ([]string, error)

	// PutDevice creates a device; ErrExists if the id is taken.
	PutDevice(ctx context.Context, d *Device) error
	Device(ctx context.Context, id string) (*Device, error)
	Devices(ctx context.Context, f DeviceFilter) ([]Device, error)
	SetDeviceStatus(ctx context.Context, id string, s DeviceStatus) error
	// UpdateDevice applies fn to the stored device inside a transaction.
	UpdateDevice(ctx context.Context, id string, fn func(*Device) error) error

	// CreateDeployment stores d (state DeployOffered when empty) with its first
	// step; d.Steps[0].Detail, when given, is that step's detail.
	CreateDeployment(ctx context.Context, d *Deployment) error
	Deployment(ctx context.Context, id int64) (*Deployment, error)
	// Deployments lists deployments, newest first; device "" means all devices.
	Deployments(ctx context.Context, device string, activeOnly bool) ([]Deployment, error)
	// AddStep appends a step to a deployment and sets its state to the step's state.
	AddStep(ctx context.Context, id int64, s Step) error

	// AppendAudit chains e to the last entry (see audit.go) and stores it.
	AppendAudit(ctx context.Context, e *AuditEntry) error
	// Audit lists entries with Seq > after in order, at most limit (0 = all).
	Audit(ctx context.Context, after int64, limit int) ([]AuditEntry, error)

	Close() error
}

// BundleRecord is a bundle stored in the repository.
type BundleRecord struct {
	Name            string    `json:"name"`
	Version         string    `json:"version"`
	SecurityVersion uint64    `json:"security_version"`
	Digest          string    `json:"manifest_digest"` // hex sha256 of the signed manifest
	Manifest        []byte    `json:"-"`               // signed manifest envelope
	Size            int64     `json:"size"`            // bytes of the uploaded .apb
	Created         time.Time `json:"created"`
	UploadedBy      string    `json:"uploaded_by"`
}

// ChunkRef places one stored chunk in a bundle.
type ChunkRef struct {
	Component int    `json:"component"`
	Index     int    `json:"index"`
	Key       string `json:"key"` // chunk store key
	Size      int64  `json:"size"`
}

// DeviceStatus is a device's registration state.
type DeviceStatus string

const (
	StatusPending  DeviceStatus = "pending"
	StatusAccepted DeviceStatus = "accepted"
	StatusRejected DeviceStatus = "rejected"
)

// Valid reports whether s is a known status.
func (s DeviceStatus) Valid() bool {
	return s == StatusPending || s == StatusAccepted || s == StatusRejected
}

// Device is one registered device and its inventory.
type Device struct {
	ID             string       `json:"id"`
	Status         DeviceStatus `json:"status"`
	Hardware       string       `json:"hardware"`
	CredentialHash string       `json:"-"` // hex sha256 of salt||password, "salt:hash"
	CertSHA256     string       `json:"cert_sha256,omitempty"`
	Inventory      Inventory    `json:"inventory"`
	LastResult     string       `json:"last_result,omitempty"`
	LastSeen       time.Time    `json:"last_seen"`
	Online         bool         `json:"online"`
	Created        time.Time    `json:"created"`
}

// Inventory is what a device last reported about itself.
type Inventory struct {
	Slots      map[string]string `json:"slots,omitempty"`      // boot name → bundle version in it
	Booted     string            `json:"booted,omitempty"`     // slot running now
	Components map[string]string `json:"components,omitempty"` // component → installed version
	Trial      string            `json:"trial,omitempty"`      // slot on trial, "" when none
	Agent      string            `json:"agent,omitempty"`      // autopatchd version
}

// DeviceFilter selects devices; zero fields match everything.
type DeviceFilter struct {
	Status   DeviceStatus
	Hardware string
	Online   *bool
}

// Deployment is one bundle sent to one device.
type Deployment struct {
	ID      int64     `json:"id"`
	Bundle  string    `json:"bundle"`
	Version string    `json:"version"`
	Device  string    `json:"device"`
	State   string    `json:"state"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Steps   []Step    `json:"steps,omitempty"`
}

// Deployment states recorded by the hub; device steps in between are stored as reported.
const (
	DeployOffered = "offered"
	// DeployWaitingReboot: the device installed the update and set its trial
	// slot, and waits for the hub's reboot command (reboot policy "hub").
	DeployWaitingReboot = "waiting-reboot"
	// DeployWaitingWindow: installed, waiting for the maintenance window.
	DeployWaitingWindow = "waiting-window"
	DeploySucceeded     = "succeeded"
	DeployFailed        = "failed"
	DeployRolledBack    = "rolled-back"
	DeployCancelled     = "cancelled"
)

// Final reports whether a deployment in state s is over.
func Final(state string) bool {
	switch state {
	case DeploySucceeded, DeployFailed, DeployRolledBack, DeployCancelled:
		return true
	}
	return false
}

// AwaitingReboot reports whether a deployment in state s has its update
// installed and waits only for the reboot into it: for the hub's reboot
// command (DeployWaitingReboot) or for the device's maintenance window
// (DeployWaitingWindow; a reboot command brings it forward).
func AwaitingReboot(state string) bool {
	return state == DeployWaitingReboot || state == DeployWaitingWindow
}

// Step is one state change of a deployment.
type Step struct {
	State  string    `json:"state"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// AuditEntry is one row of the hash-chained audit log.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
	Prev   string    `json:"prev"` // hex hash of the previous entry ("" for the first)
	Hash   string    `json:"hash"` // hex sha256(prev || canonical(entry))
}
