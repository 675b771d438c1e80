package transport

// The generated msgp tests are off: they carry micro-benchmarks that report
// bare times; TestEncodeDecode and FuzzDecode cover every message instead.
//go:generate msgp -file msg.go -o msg_gen.go -tests=false

// Version is the protocol version this package writes into every message.
// A message whose version is 0 (missing) or newer than Version is dropped.
const Version = 1

// ErrorKind is a stable, machine-readable error class carried on the wire.
// Its text never changes once released; human detail goes in a separate field.
type ErrorKind string

// Error kinds carried in Data.Err and Status.Kind.
const (
	KindNone       ErrorKind = ""
	KindNotOffered ErrorKind = "not-offered" // the device asked for a bundle the hub did not offer it
	KindNotFound   ErrorKind = "not-found"   // the chunk, component or manifest does not exist
	KindBadRequest ErrorKind = "bad-request" // the request was malformed (bad index, oversized window)
	KindExpired    ErrorKind = "expired"     // the offer expired
	KindInternal   ErrorKind = "internal"    // the hub failed to read its store
	KindSignature  ErrorKind = "signature"   // the device refused a signature or a chunk hash
	KindTimeout    ErrorKind = "timeout"     // the device gave up waiting for data
	KindIncompat   ErrorKind = "incompatible"
	KindStorage    ErrorKind = "storage" // the device could not write its slot
	KindHealth     ErrorKind = "health"  // a health check failed after the trial boot
	KindCancelled  ErrorKind = "cancelled"
)

// Reboot policies carried in Policy.Reboot.
const (
	RebootNow    = "now"    // reboot as soon as the install is complete
	RebootWindow = "window" // reboot inside the maintenance window
	RebootHub    = "hub"    // wait for a Cmd{Op: CmdReboot} from the hub
)

// Cmd operations.
const (
	CmdReboot = "reboot" // reboot into the installed slot now
	CmdCancel = "cancel" // abandon the download or install of Cmd.Offer
	CmdReport = "report" // publish a fresh Hello
)

// Hello is published by a device when it connects and whenever its inventory
// changes, on ap/v1/d/{device}/hello.
type Hello struct {
	V          uint32      `msg:"v"`
	Device     string      `msg:"dev"`      // must equal the {device} of the topic
	Hardware   string      `msg:"hw"`       // hardware id matched against Manifest.Compatible
	Daemon     string      `msg:"daemon"`   // autopatchd version
	Slots      []SlotInfo  `msg:"slots"`    // every slot of every class
	Components []Installed `msg:"comps"`    // installed components
	Trial      string      `msg:"trial"`    // slot under trial boot, "" when none
	LastResult string      `msg:"last"`     // result of the last update: "success", "rollback", "failed", ""
	LastKind   ErrorKind   `msg:"lastkind"` // error kind of the last failed update
	OfferAge   int64       `msg:"offerage"` // seconds since the newest offer seen was issued; -1 none
	Offer      string      `msg:"offer"`    // id of the newest offer seen, "" none
}

// SlotInfo describes one slot of a device.
type SlotInfo struct {
	Class   string `msg:"class"` // e.g. "rootfs"
	Name    string `msg:"name"`  // boot name, "A" or "B"
	Version string `msg:"ver"`   // bundle version installed in it, "" unknown
	Booted  bool   `msg:"booted"`
	Bad     bool   `msg:"bad"`
}

// Installed is one installed component.
type Installed struct {
	Name    string `msg:"name"`
	Version string `msg:"ver"`
}

// Status reports progress and results, on ap/v1/d/{device}/status.
type Status struct {
	V         uint32    `msg:"v"`
	State     string    `msg:"state"`  // engine state name, e.g. "downloading", "installing", "trial", "idle"
	Offer     string    `msg:"offer"`  // offer id this status is about
	Bundle    string    `msg:"bundle"` // NAME@VERSION
	Component string    `msg:"comp"`
	Done      uint32    `msg:"done"`  // chunks done in Component
	Total     uint32    `msg:"total"` // chunks in Component
	Result    string    `msg:"result"`
	Kind      ErrorKind `msg:"kind"`   // stable error kind when Result is a failure
	Reason    string    `msg:"reason"` // human-readable detail
	Time      int64     `msg:"t"`      // Unix seconds on the device
}

// Get asks the hub for chunks of one component, or for the signed manifest,
// on ap/v1/d/{device}/get.
//
// Wanted chunks are Base+i for every bit i set in Bitmap (bit i is
// Bitmap[i/8]&(1<<(i%8))). Window is the most chunks the device will have
// outstanding; the hub never sends more than Window chunks per Get.
type Get struct {
	V        uint32 `msg:"v"`
	Offer    string `msg:"offer"`  // offer id
	Digest   []byte `msg:"digest"` // sha256 of the signed manifest, from the Offer
	Manifest bool   `msg:"man"`    // true: send the signed manifest; Comp/Base/Bitmap are ignored
	Comp     uint32 `msg:"comp"`   // component index in the manifest
	Base     uint32 `msg:"base"`   // chunk index of bit 0
	Bitmap   []byte `msg:"bits"`
	Window   uint32 `msg:"win"`
	Seq      uint32 `msg:"seq"` // echoed in Data so a device can tell answers apart
}

// Offer is the latest desired update for a device, kept as a retained message on
// ap/v1/d/{device}/offer. An Offer with an empty ID withdraws the previous one.
type Offer struct {
	V        uint32 `msg:"v"`
	ID       string `msg:"id"`
	Bundle   string `msg:"bundle"`  // bundle name
	Version  string `msg:"version"` // bundle version
	Digest   []byte `msg:"digest"`  // sha256 of the signed manifest
	Size     uint64 `msg:"size"`    // sum of stored chunk bytes, for progress
	Issued   int64  `msg:"issued"`  // Unix seconds
	Expires  int64  `msg:"expires"` // Unix seconds; 0 never
	Severity string `msg:"sev"`
	Policy   Policy `msg:"policy"`
}

// Policy says when the device may act on an offer.
type Policy struct {
	Reboot       string `msg:"reboot"`   // RebootNow, RebootWindow or RebootHub
	Window       string `msg:"window"`   // maintenance window, cron "m h dom mon dow"; see WindowSpec
	WindowLength int64  `msg:"winlen"`   // seconds
	DownloadOnly bool   `msg:"download"` // download and verify, install on a later offer
}

// Cmd is an instruction from the hub, on ap/v1/d/{device}/cmd.
type Cmd struct {
	V     uint32 `msg:"v"`
	ID    string `msg:"id"` // unique per command, echoed in the resulting Status.Reason
	Op    string `msg:"op"` // CmdReboot, CmdCancel, CmdReport
	Offer string `msg:"offer"`
}

// Data answers a Get, on ap/v1/d/{device}/data: one stored chunk, or the signed
// manifest, or an error kind.
type Data struct {
	V        uint32    `msg:"v"`
	Offer    string    `msg:"offer"`
	Manifest bool      `msg:"man"` // Bytes hold the signed manifest
	Comp     uint32    `msg:"comp"`
	Index    uint32    `msg:"idx"`
	Bytes    []byte    `msg:"b,zerocopy"` // stored (possibly compressed) chunk bytes; aliases the decoded buffer
	Err      ErrorKind `msg:"err"`
	Detail   string    `msg:"detail"`
	Seq      uint32    `msg:"seq"` // Seq of the Get being answered
}
