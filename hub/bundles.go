package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/autopatcher/autopatcher/bundle"
)

// DefaultMaxUpload caps the size of an uploaded bundle file.
const DefaultMaxUpload = 8 << 30

// ErrTooLarge reports an upload over the size cap.
var ErrTooLarge = errors.New("hub: upload too large")

// UploadStats says what an upload added to the chunk store.
type UploadStats struct {
	Chunks     int   `json:"chunks"`      // chunks in the bundle
	NewChunks  int   `json:"new_chunks"`  // chunks not already stored by another bundle
	NewBytes   int64 `json:"new_bytes"`   // bytes written to the chunk store
	Deduped    int64 `json:"dedup_bytes"` // stored bytes already in the chunk store (earlier bundles or repeats within this one)
	Components int   `json:"components"`
}

// Upload verifies a bundle file read from r and adds it to the repository:
// the signed manifest must verify against the hub's vendor keys (an unknown key
// fails with bundle.ErrUnknownKey) and every stored chunk against the signed chunk
// table before anything is stored. Chunks are stored by hash, once across bundles.
func (h *Hub) Upload(ctx context.Context, actor string, r io.Reader, maxSize int64) (*BundleRecord, *UploadStats, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxUpload
	}
	f, err := os.CreateTemp(h.opt.TempDir, "upload-*.apb")
	if err != nil {
		return nil, nil, fmt.Errorf("upload bundle: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("upload bundle: receive: %w", err)
	}
	if n > maxSize {
		return nil, nil, fmt.Errorf("upload bundle: more than %d bytes: %w", maxSize, ErrTooLarge)
	}
	rec, chunks, stored, err := h.verifyFile(f, n)
	if err != nil {
		// A refused bundle changes nothing, but who tried to push what is worth keeping.
		h.audit(ctx, actor, "bundle.refused", "", err.Error())
		return nil, nil, fmt.Errorf("upload bundle: %w", err)
	}
	rec.UploadedBy = actor
	rec.Created = now().UTC()

	h.chunkMu.Lock()
	defer h.chunkMu.Unlock()
	st := &UploadStats{Chunks: len(chunks), Components: stored.components}
	var written []string
	buf := make([]byte, 0, bundle.MaxChunk)
	for i, c := range chunks {
		ext := stored.extents[i]
		if h.opt.Chunks.Has(c.Key) { // stored by an earlier bundle or earlier in this one: no need to read it again
			st.Deduped += ext.Length
			continue
		}
		buf = buf[:ext.Length]
		if _, err := f.ReadAt(buf, ext.Offset); err != nil {
			return nil, nil, fmt.Errorf("upload bundle: reread chunk: %w", err)
		}
		// Verified in verifyFile; the file is ours and private, so it is unchanged.
		wrote, err := h.opt.Chunks.Put(c.Key, buf)
		if err != nil {
			h.removeChunks(written)
			return nil, nil, fmt.Errorf("upload bundle: %w", err)
		}
		if wrote {
			written = append(written, c.Key)
			st.NewChunks++
			st.NewBytes += ext.Length
		} else {
			st.Deduped += ext.Length
		}
	}
	if err := h.store.PutBundle(ctx, rec, chunks); err != nil {
		h.removeChunks(written)
		return nil, nil, err
	}
	h.audit(ctx, actor, "bundle.upload", rec.Name+"@"+rec.Version,
		fmt.Sprintf("digest=%s size=%d new_chunks=%d", rec.Digest, rec.Size, st.NewChunks))
	h.log.Info("bundle uploaded", "bundle", rec.Name, "version", rec.Version, "by", actor, "chunks", st.Chunks, "new", st.NewChunks)
	return rec, st, nil
}

func (h *Hub) removeChunks(keys []string) {
	for _, k := range keys {
		if err := h.opt.Chunks.Remove(k); err != nil {
			h.log.Error("remove chunk", "key", k, "err", err)
		}
	}
}

type layout struct {
	extents    []bundle.Extent // parallel to the chunk refs
	components int
}

// verifyFile checks the bundle file f of size n: header, signatures (against the
// hub's trust), manifest, every chunk, and that nothing follows the last chunk.
func (h *Hub) verifyFile(f *os.File, n int64) (*BundleRecord, []ChunkRef, *layout, error) {
	if h.opt.Trust == nil || len(h.opt.Trust.Keys) == 0 {
		return nil, nil, nil, fmt.Errorf("verify signature: the hub has no vendor keys configured: %w", bundle.ErrUnknownKey)
	}
	// Open verifies the signatures before it decodes the manifest, and reads nothing
	// beyond the signed section; the chunks are then checked one by one from the file.
	br, err := bundle.Open(io.NewSectionReader(f, 0, n), h.opt.Trust)
	if err != nil {
		return nil, nil, nil, err
	}
	br.Close()
	m, signed := br.Manifest(), br.SignedManifest()
	dataOff := br.DataOffset()
	if want := dataOff + m.StoredSize(); want != n {
		if want > n {
			return nil, nil, nil, fmt.Errorf("bundle %s@%s: %d bytes, manifest declares %d: %w", m.Name, m.Version, n, want, bundle.ErrTruncated)
		}
		return nil, nil, nil, fmt.Errorf("bundle %s@%s: %d bytes after the last chunk: %w", m.Name, m.Version, n-want, bundle.ErrMalformed)
	}
	ext := bundle.Layout(m, dataOff)
	var refs []ChunkRef
	lay := &layout{components: len(m.Components)}
	buf := make([]byte, 0, bundle.MaxChunk)
	for ci := range m.Components {
		comp := &m.Components[ci]
		whole := sha256.New()
		for i, e := range ext[ci] {
			if e.Length > bundle.MaxChunk {
				return nil, nil, nil, fmt.Errorf("component %q chunk %d: %d stored bytes: %w", comp.Name, i, e.Length, bundle.ErrTooLarge)
			}
			buf = buf[:e.Length]
			if _, err := f.ReadAt(buf, e.Offset); err != nil {
				return nil, nil, nil, fmt.Errorf("component %q chunk %d: %w", comp.Name, i, bundle.ErrTruncated)
			}
			plain, err := comp.VerifyChunk(i, buf)
			if err != nil {
				return nil, nil, nil, err
			}
			whole.Write(plain)
			compression := ""
			if comp.Chunks[i].StoredLength != comp.Chunks[i].Length {
				compression = string(comp.Compression)
			}
			refs = append(refs, ChunkRef{Component: ci, Index: i, Key: ChunkKey(comp.Chunks[i].SHA256, compression), Size: e.Length})
			lay.extents = append(lay.extents, e)
		}
		if !bytes.Equal(whole.Sum(nil), comp.SHA256) {
			return nil, nil, nil, fmt.Errorf("component %q: payload hash differs from the manifest: %w", comp.Name, bundle.ErrCorruptChunk)
		}
	}
	sum := sha256.Sum256(signed)
	rec := &BundleRecord{
		Name:            m.Name,
		Version:         m.Version,
		SecurityVersion: m.SecurityVersion,
		Digest:          hex.EncodeToString(sum[:]),
		Manifest:        signed,
		Size:            n,
	}
	return rec, refs, lay, nil
}

// CollectGarbage removes chunk files no bundle references (left by an upload that
// was interrupted between storing its chunks and recording the bundle) and stale
// upload spool files. It returns how many chunks it removed.
func (h *Hub) CollectGarbage(ctx context.Context) (int, error) {
	h.chunkMu.Lock()
	defer h.chunkMu.Unlock()
	used, err := h.store.ChunkKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("collect chunks: %w", err)
	}
	in := make(map[string]bool, len(used))
	for _, k := range used {
		in[k] = true
	}
	keys, err := h.opt.Chunks.Keys()
	if err != nil {
		return 0, fmt.Errorf("collect chunks: %w", err)
	}
	var orphans []string
	for _, k := range keys {
		if !in[k] {
			orphans = append(orphans, k)
		}
	}
	h.removeChunks(orphans)
	if h.opt.TempDir != "" {
		stale, _ := filepath.Glob(filepath.Join(h.opt.TempDir, "upload-*.apb"))
		for _, p := range stale {
			os.Remove(p)
		}
	}
	if len(orphans) > 0 {
		h.log.Info("removed unreferenced chunks", "count", len(orphans))
	}
	return len(orphans), nil
}

// DeleteBundle removes a bundle (refused while a deployment of it is active) and
// the chunks no other bundle uses.
func (h *Hub) DeleteBundle(ctx context.Context, actor, name, version string) error {
	h.chunkMu.Lock()
	defer h.chunkMu.Unlock()
	orphans, err := h.store.DeleteBundle(ctx, name, version)
	if err != nil {
		return err
	}
	h.removeChunks(orphans)
	return h.audit(ctx, actor, "bundle.delete", name+"@"+version, fmt.Sprintf("freed_chunks=%d", len(orphans)))
}
