package bundle

// Hard limits of the format. A reader never allocates more than these allow,
// whatever its input.
const (
	MinChunk = 16 << 10  // smallest content-defined chunk (except a component's last)
	AvgChunk = 64 << 10  // target average chunk size
	MaxChunk = 256 << 10 // largest chunk, uncompressed and stored

	DefaultMaxManifest   = 16 << 20 // bytes of encoded manifest
	DefaultMaxComponents = 256
	DefaultMaxSignatures = 16
	DefaultMaxTotalSize  = 64 << 30 // sum of uncompressed component sizes

	// maxSignatureBytes bounds one encoded COSE_Sign1 with a detached payload.
	maxSignatureBytes = 1 << 10
)

// Limits caps what a reader accepts. Zero fields take the defaults above;
// values above the defaults are allowed for manifests and total size only.
type Limits struct {
	MaxManifest   int64  // encoded manifest bytes (default 16 MiB)
	MaxComponents int    // components per bundle (default 256)
	MaxSignatures int    // signatures per bundle (default 16)
	MaxTotalSize  uint64 // sum of uncompressed component sizes (default 64 GiB)
}

func (l Limits) withDefaults() Limits {
	if l.MaxManifest <= 0 {
		l.MaxManifest = DefaultMaxManifest
	}
	if l.MaxComponents <= 0 {
		l.MaxComponents = DefaultMaxComponents
	}
	if l.MaxSignatures <= 0 {
		l.MaxSignatures = DefaultMaxSignatures
	}
	if l.MaxTotalSize == 0 {
		l.MaxTotalSize = DefaultMaxTotalSize
	}
	return l
}

// signedMax is the largest signed section these limits accept: the manifest,
// the signatures, and a little CBOR framing.
func (l Limits) signedMax() int64 {
	l = l.withDefaults()
	return l.MaxManifest + int64(l.MaxSignatures)*maxSignatureBytes + 64
}
