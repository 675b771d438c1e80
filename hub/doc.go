// Package hub is AutoPatcher's fleet server: the bundle repository, the device
// registry and inventory, single-device deployments, the hash-chained audit log,
// the HTTP API, and the embedded MQTT broker that devices connect to.
//
// # Processes and state
//
// By default one process (Start) runs an embedded MQTT broker (mochi-mqtt, TCP
// and TLS listeners), the HTTP API and a Store: SQLite (pure Go, WAL, foreign
// keys, 5 s busy timeout) in DATA/hub.db plus a chunk directory DATA/chunks.
// Callers use only the Store interface; its schema is applied by numbered
// migrations, each in one transaction with its schema_version row, so a
// PostgreSQL implementation can sit beside SQLite without touching callers.
// With Config.MQTT.Broker set, the hub connects to an external broker (for
// example mosquitto, see docs/mosquitto/) as the client "autopatch-hub" and the
// broker enforces the ACL instead.
//
// # Bundles and chunks
//
// An upload (POST /api/v1/bundles, raw .apb body) is spooled to DATA/tmp,
// opened with bundle.Open against the configured vendor keys (signatures are
// verified before the manifest is decoded; an unknown key fails with
// bundle.ErrUnknownKey), and every stored chunk is checked with
// Component.VerifyChunk, plus each component's whole-payload hash, before
// anything is stored. Chunks are stored once per content under
// DATA/chunks/xx/KEY, KEY = hex sha256 of the uncompressed chunk, plus ".zstd"
// when the stored bytes are compressed; files are written to a temporary name and
// renamed. bundle_chunks maps (bundle, component, index) to keys; deleting a
// bundle removes the keys no other bundle references (refused while a
// deployment of it is active).
//
// # Devices
//
// A device connects with client id = its device id. Its identity is the common
// name of its client certificate (TLS listener) or its MQTT user name (plain
// listener, when certificates are not required); either must equal the client
// id. The first connection registers the device as pending and pins its
// certificate fingerprint or a salted hash of its password; a certificate that
// chains to Config.DeviceCA registers it as accepted instead. Rejected devices
// are refused. With an external broker, the first Hello registers the device.
// Hello messages update the inventory (hardware, slots and versions, booted
// slot, components, trial slot, last result); connect and disconnect set online
// and last seen. The broker's ACL is transport.Allowed: a device publishes only
// its own hello/status/get and subscribes only to its own cmd/data/offer.
//
// # Deployments
//
// Deploy (POST /api/v1/deployments) offers NAME@VERSION to one accepted,
// hardware-compatible device: it stores a deployment (state "offered"), cancels
// an earlier active one, and publishes a retained transport.Offer with id
// "dep-N" on ap/v1/d/{device}/offer. Get requests on ap/v1/d/{device}/get are
// answered by a transport.Server reading the chunk directory, and only for that
// device's active offer while the device is accepted (else Data with error kind
// "not-offered"): the signed manifest, or up to min(Window, transport.MaxWindow)
// stored chunks named by the request's bitmap. Each Status whose state differs
// from the last recorded one becomes a step (the device's "waiting-hub" is
// recorded as "waiting-reboot"); a Status with a Result ends the deployment
// (succeeded, rolled-back or failed) and withdraws the retained offer.
//
// The offer's Policy.Reboot is the request's reboot policy: "now" (default),
// "window" (Policy.Window, cron "m h dom mon dow", with WindowLength seconds;
// empty: the device's own window) or "hub" (the device installs, sets its trial
// slot and waits for a Cmd reboot). Policy.DownloadOnly is never set: the
// device reports nothing when such a download ends.
//
// # Commands
//
// Reboot, Report and Cancel publish a transport.Cmd (QoS 1, not retained) on
// ap/v1/d/{device}/cmd with a fresh id "cmd-…" and the device's active offer
// id. Cancel first ends the deployment as "cancelled" (later Status about it is
// ignored), then sends Cmd cancel and withdraws the retained offer. Each is
// recorded in the audit log (actions reboot, report, cancel).
//
// # API and audit
//
// Every endpoint needs "Authorization: Bearer TOKEN"; tokens carry a role
// (viewer < operator < admin) and Routes is the table of the least role per
// endpoint. Every state-changing call appends to the audit log, whose rows are
// chained: hash = sha256(prev_hash || canonical(row)), canonical being seq, time
// in Unix nanoseconds and the length-prefixed actor, action, target and detail.
// VerifyAudit detects any edited, reordered or removed row except the loss of the
// newest rows (keep a copy of the latest hash elsewhere to detect truncation).
package hub
