// Package bundle reads, verifies and builds AutoPatcher bundles (.apb), the
// signed files that carry an update from a vendor to every device.
//
// # Layout
//
// A bundle is one file, readable front to back as a stream:
//
//	offset 0    magic "\x89APB\r\n\x1a\n" (8 bytes)
//	offset 8    format version, uint16 big endian (1)
//	offset 10   flags, uint16 big endian (0)
//	offset 12   length S of the signed section, uint32 big endian
//	offset 16   signed section, S bytes: CBOR [ manifest: bstr, [+ COSE_Sign1] ]
//	offset 16+S stored chunks of every component, in manifest order, no gaps
//
// # Signatures
//
// Each signature is a tagged COSE_Sign1 with a detached payload, so the
// manifest bytes appear once; the protected header holds the algorithm
// (EdDSA or ES256), the content type ContentType and the key id (KeyID). Open
// and VerifyManifest check the signatures against a Trust (keys, threshold,
// revoked ids) before the manifest is decoded: a signature by a trusted key
// that fails is fatal, and at least Threshold distinct trusted keys must have
// signed. Several signatures (vendor and fleet operator) cover the same
// manifest; Countersign adds one without touching the payload.
//
// # Manifest
//
// The Manifest is CBOR in core deterministic encoding with small integer map
// keys; a reader re-encodes what it decoded and rejects anything that is not
// the one valid encoding. It names the bundle, its semver version, the
// monotonic security version, compatible hardware, creation and expiry times
// (expiry is checked by devices, not here), severity, CVEs, requirements,
// and the components with their dependencies and chunk tables.
//
// # Chunks
//
// Every component's payload is split into content-defined chunks (Cut,
// Chunker; MinChunk 16 KiB, about AvgChunk 64 KiB, MaxChunk 256 KiB), so an
// unchanged region of a new image yields the same chunk hashes as the old
// one: the chunk table doubles as the delta index. Each entry gives the
// chunk's offset, length, stored length and the SHA-256 of its uncompressed
// bytes; the entries must cover the payload contiguously, so verifying every
// chunk proves every byte. A chunk is stored raw, or, in a zstd component,
// as one zstd frame when that is smaller; a compressed chunk also carries the
// SHA-256 of its stored bytes, checked before decompressing, and
// decompression is capped at the declared length.
//
// Any chunk can be located from the manifest alone (Layout) and verified
// alone (Component.VerifyChunk), which is how chunks travel over MQTT.
//
// # Reading
//
// Open reads the header and the signed section, verifies, and returns a
// Reader; Next yields each component with an io.Reader of verified bytes.
// A second goroutine reads and verifies chunks ahead of the consumer
// (WithReadAhead). Each byte is hashed once: the contiguous chunk table
// proves the whole payload, so the component's SHA-256 is not needed to
// trust it: it is one digest of the whole image, for a writer that reads
// an image back as one stream (slots.Target.Write) and for builder QA, and
// WithPayloadHash asks the reader to check it too. Hard limits (Limits)
// bound every allocation.
// Errors wrap one of the package's sentinel errors (ErrSignature,
// ErrCorruptChunk, ...) and name the failed check, component and chunk.
//
// # Building
//
// Build and BuildSpec (from a YAML Spec) chunk, hash and compress payloads in
// parallel, spool the stored chunks, then write header, signed manifest and
// payload. The same inputs and Ed25519 keys give a byte-identical bundle.
//
// docs/bundle-format.md specifies the format in CDDL, enough to write a
// compatible reader in another language.
package bundle
