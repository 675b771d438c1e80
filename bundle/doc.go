// Package bundle reads, verifies and builds AutoPatcher bundles (.apb).
//
// A bundle is one file, readable front to back as a stream:
//
//	offset 0   magic "\x89APB\r\n\x1a\n" (8 bytes)
//	offset 8   format version, uint16 big endian (1)
//	offset 10  flags, uint16 big endian (0)
//	offset 12  length S of the signed section, uint32 big endian
//	offset 16  signed section, S bytes: CBOR [ manifest: bstr, [+ COSE_Sign1] ]
//	16+S       stored chunks of every component, in manifest order, no gaps
//
// The manifest is deterministic CBOR (see Manifest). Each signature is a
// tagged COSE_Sign1 with a detached payload, so the manifest bytes appear
// once; the protected header holds the algorithm (EdDSA or ES256), the
// content type ContentType and the key id (KeyID). Open verifies the
// signatures against a Trust (keys, threshold, revoked ids) before it
// decodes the manifest.
//
// Every component's payload is split into content-defined chunks (Cut;
// MinChunk 16 KiB, about AvgChunk 64 KiB, MaxChunk 256 KiB). The manifest's
// chunk table gives each chunk's offset, length, stored length and the
// SHA-256 of its uncompressed bytes; the table must cover the payload
// contiguously. A chunk is stored raw, or as one zstd frame when the
// component is zstd-compressed and the frame is smaller than the chunk. Any
// chunk can be located from the manifest alone (Layout) and verified alone
// (Component.VerifyChunk).
//
// docs/bundle-format.md in the repository specifies the format in CDDL.
package bundle
