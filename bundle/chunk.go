package bundle

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A zstd-compressed component stores each chunk as one zstd frame, except a
// chunk that did not shrink: it is stored raw and its StoredLength equals its
// Length. A compressed chunk's StoredLength is therefore always smaller than
// its Length, and the rule is unambiguous.

var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxChunk),
		zstd.WithDecoderMaxWindow(MaxChunk),
	)
})

// VerifyChunk checks chunk i of the component given its stored bytes (as
// found in the bundle or received from a hub) and returns the uncompressed,
// verified bytes; for a chunk stored raw that is stored itself. Decompression
// never produces more than the declared length. Errors wrap ErrCorruptChunk
// and name the component and chunk.
func (c *Component) VerifyChunk(i int, stored []byte) ([]byte, error) {
	if i < 0 || i >= len(c.Chunks) {
		return nil, fmt.Errorf("component %q chunk %d: no such chunk (component has %d): %w", c.Name, i, len(c.Chunks), ErrCorruptChunk)
	}
	return c.verifyChunk(i, stored, make([]byte, 0, c.Chunks[i].Length))
}

// verifyChunk decodes stored into dst (whose capacity is reused when large
// enough) or returns stored itself when the chunk is stored raw.
func (c *Component) verifyChunk(i int, stored, dst []byte) ([]byte, error) {
	ch := &c.Chunks[i]
	if len(stored) != int(ch.StoredLength) {
		return nil, fmt.Errorf("component %q chunk %d: %d stored bytes, want %d: %w", c.Name, i, len(stored), ch.StoredLength, ErrCorruptChunk)
	}
	plain := stored
	if ch.StoredLength != ch.Length {
		// Only zstd components may differ; Validate enforced that. The
		// stored bytes are checked before they reach the decompressor.
		sum := sha256.Sum256(stored)
		if subtle.ConstantTimeCompare(sum[:], ch.StoredSHA256) != 1 {
			return nil, fmt.Errorf("component %q chunk %d: stored sha256 mismatch: %w", c.Name, i, ErrCorruptChunk)
		}
		dec, err := zstdDecoder()
		if err != nil {
			return nil, fmt.Errorf("component %q chunk %d: zstd: %w", c.Name, i, err)
		}
		plain, err = dec.DecodeAll(stored, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("component %q chunk %d: decompress: %v: %w", c.Name, i, err, ErrCorruptChunk)
		}
		if len(plain) != int(ch.Length) {
			return nil, fmt.Errorf("component %q chunk %d: decompressed to %d bytes, want %d: %w", c.Name, i, len(plain), ch.Length, ErrCorruptChunk)
		}
	}
	sum := sha256.Sum256(plain)
	if subtle.ConstantTimeCompare(sum[:], ch.SHA256) != 1 {
		return nil, fmt.Errorf("component %q chunk %d: sha256 mismatch: %w", c.Name, i, ErrCorruptChunk)
	}
	return plain, nil
}
