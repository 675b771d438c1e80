package bundle

// FormatVersion is the bundle format version this package reads and writes.
const FormatVersion = 1

// Kind says how a component is installed.
type Kind string

const (
	KindImage   Kind = "image"   // a whole slot (rootfs, boot, firmware) written to the inactive slot of its class
	KindPackage Kind = "package" // a tar of files unpacked into a new versioned directory
	KindFile    Kind = "file"    // one file written to Path
)

// Severity classifies why a bundle was published.
type Severity string

const (
	SeverityCritical Severity = "critical"
	SeveritySecurity Severity = "security"
	SeverityNormal   Severity = "normal"
)

// Compression of a component's chunks; each chunk is compressed on its own.
type Compression string

const (
	CompressionNone Compression = "none"
	CompressionZstd Compression = "zstd"
)

// Manifest is the signed description of a bundle.
type Manifest struct {
	FormatVersion   uint         `cbor:"1,keyasint"`
	Name            string       `cbor:"2,keyasint"`
	Version         string       `cbor:"3,keyasint"`           // semver
	SecurityVersion uint64       `cbor:"4,keyasint"`           // monotonic anti-rollback counter
	Compatible      []string     `cbor:"5,keyasint"`           // hardware ids
	Created         int64        `cbor:"6,keyasint"`           // Unix seconds
	Expires         int64        `cbor:"7,keyasint,omitempty"` // Unix seconds; 0 = never
	Severity        Severity     `cbor:"8,keyasint"`
	CVEs            []string     `cbor:"9,keyasint,omitempty"`
	Description     string       `cbor:"10,keyasint,omitempty"`
	Requires        []Dependency `cbor:"11,keyasint,omitempty"` // must already be installed on the device
	Components      []Component  `cbor:"12,keyasint"`
}

// Dependency names a component and the semver versions that satisfy it.
type Dependency struct {
	Name       string `cbor:"1,keyasint"`
	Constraint string `cbor:"2,keyasint,omitempty"` // e.g. ">= 1.2, < 2"; empty = any version
}

// Component is one installable part of a bundle.
type Component struct {
	Name        string       `cbor:"1,keyasint"`
	Kind        Kind         `cbor:"2,keyasint"`
	Slot        string       `cbor:"3,keyasint,omitempty"` // slot class for images, e.g. "rootfs"
	Path        string       `cbor:"4,keyasint,omitempty"` // install path for files, package name dir for packages
	Version     string       `cbor:"5,keyasint"`
	Size        uint64       `cbor:"6,keyasint"` // uncompressed payload size
	SHA256      []byte       `cbor:"7,keyasint"` // of the whole uncompressed payload
	Compression Compression  `cbor:"8,keyasint"`
	Chunks      []Chunk      `cbor:"9,keyasint"`
	Depends     []Dependency `cbor:"10,keyasint,omitempty"`
}

// Chunk is one content-defined piece of a component's payload.
type Chunk struct {
	Offset       uint64 `cbor:"1,keyasint"` // in the uncompressed payload
	Length       uint32 `cbor:"2,keyasint"` // uncompressed
	StoredLength uint32 `cbor:"3,keyasint"` // as stored in the bundle (compressed or not)
	SHA256       []byte `cbor:"4,keyasint"` // of the uncompressed bytes
	// StoredSHA256 is the SHA-256 of the stored bytes, present only when
	// the chunk is stored compressed (StoredLength < Length). It is checked
	// before decompressing, so the decompressor only ever sees signed bytes.
	StoredSHA256 []byte `cbor:"5,keyasint,omitempty"`
}
