package hub_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
)

func TestUploadRefuses(t *testing.T) {
	key, _, pub := hubtest.Key(t)
	other, _, _ := hubtest.Key(t)
	s := hubtest.Start(t, pub, nil)
	good := hubtest.Bundle(t, key, "app", "1.0.0", hubtest.Payload(1, 200<<10))

	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-100] ^= 0xff // inside the last chunk
	tests := []struct {
		name string
		file []byte
		want error
	}{
		{"unknown key", hubtest.Bundle(t, other, "app", "1.0.0", hubtest.Payload(1, 200<<10)), bundle.ErrUnknownKey},
		{"corrupt chunk", corrupt, bundle.ErrCorruptChunk},
		{"truncated", good[:len(good)-10], bundle.ErrTruncated},
		{"trailing bytes", append(bytes.Clone(good), 0), bundle.ErrMalformed},
		{"not a bundle", []byte("hello world, this is not a bundle at all"), bundle.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.Hub.Upload(context.Background(), "alice", bytes.NewReader(tt.file), 0)
			if !errors.Is(err, tt.want) {
				t.Errorf("Upload() = %v, want %v", err, tt.want)
			}
			bs, _ := s.Hub.Store().Bundles(context.Background())
			if len(bs) != 0 {
				t.Errorf("refused upload left %d bundle(s) in the store", len(bs))
			}
		})
	}
	if _, _, err := s.Hub.Upload(context.Background(), "alice", bytes.NewReader(good), 0); err != nil {
		t.Fatalf("Upload(good) = %v", err)
	}
	if _, _, err := s.Hub.Upload(context.Background(), "alice", bytes.NewReader(good), 0); !errors.Is(err, hub.ErrExists) {
		t.Errorf("Upload(same again) = %v, want ErrExists", err)
	}
	if _, _, err := s.Hub.Upload(context.Background(), "alice", bytes.NewReader(good), 1000); !errors.Is(err, hub.ErrTooLarge) {
		t.Errorf("Upload(over cap) = %v, want ErrTooLarge", err)
	}
}

func TestUploadWithoutVendorKeys(t *testing.T) {
	key, _, _ := hubtest.Key(t)
	s := hubtest.Start(t, "", nil)
	_, _, err := s.Hub.Upload(context.Background(), "alice", bytes.NewReader(hubtest.Bundle(t, key, "app", "1.0.0", []byte("x"))), 0)
	if !errors.Is(err, bundle.ErrUnknownKey) {
		t.Errorf("Upload() with no vendor keys = %v, want ErrUnknownKey", err)
	}
}

func TestChunkDedup(t *testing.T) {
	ctx := context.Background()
	key, _, pub := hubtest.Key(t)
	var data string
	s := hubtest.Start(t, pub, func(c *hub.Config) { data = c.Data })
	shared := hubtest.Payload(7, 1<<20)
	extra := hubtest.Payload(8, 300<<10)
	a := hubtest.Bundle(t, key, "app", "1.0.0", shared)
	b := hubtest.Bundle(t, key, "app", "1.1.0", shared, extra)

	chunks, err := hub.OpenChunks(data + "/chunks")
	if err != nil {
		t.Fatal(err)
	}
	usage := func() int64 {
		_, n, err := chunks.Usage()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	_, stA, err := s.Hub.Upload(ctx, "alice", bytes.NewReader(a), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Incompressible payloads are stored raw: the chunk store holds exactly the payload.
	if got, want := usage(), int64(len(shared)); got != want {
		t.Errorf("after first bundle: %d bytes stored, want %d", got, want)
	}
	_, stB, err := s.Hub.Upload(ctx, "alice", bytes.NewReader(b), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := usage(), int64(len(shared)+len(extra)); got != want {
		t.Errorf("after second bundle: %d bytes stored, want %d (shared chunks stored once)", got, want)
	}
	if stB.Deduped != int64(len(shared)) || stB.NewBytes != int64(len(extra)) {
		t.Errorf("second upload stats = %+v, want dedup %d new %d", stB, len(shared), len(extra))
	}
	if stA.NewChunks == 0 || stB.NewChunks >= stB.Chunks {
		t.Errorf("stats: first %+v second %+v", stA, stB)
	}
	if err := s.Hub.DeleteBundle(ctx, "alice", "app", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if got, want := usage(), int64(len(shared)+len(extra)); got != want {
		t.Errorf("after deleting the first bundle: %d bytes stored, want %d (still used by the second)", got, want)
	}
	if err := s.Hub.DeleteBundle(ctx, "alice", "app", "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if got := usage(); got != 0 {
		t.Errorf("after deleting both: %d bytes stored, want 0", got)
	}
	if err := s.Hub.DeleteBundle(ctx, "alice", "app", "1.1.0"); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("DeleteBundle(gone) = %v, want ErrNotFound", err)
	}
}

func TestCollectGarbage(t *testing.T) {
	ctx := context.Background()
	key, _, pub := hubtest.Key(t)
	var data string
	s := hubtest.Start(t, pub, func(c *hub.Config) { data = c.Data })
	if _, _, err := s.Hub.Upload(ctx, "alice", bytes.NewReader(hubtest.Bundle(t, key, "app", "1.0.0", hubtest.Payload(9, 100<<10))), 0); err != nil {
		t.Fatal(err)
	}
	chunks, _ := hub.OpenChunks(data + "/chunks")
	before, _ := chunks.Keys()
	orphan := hub.ChunkKey(bytes.Repeat([]byte{7}, 32), "")
	if _, err := chunks.Put(orphan, []byte("left by an interrupted upload")); err != nil {
		t.Fatal(err)
	}
	n, err := s.Hub.CollectGarbage(ctx)
	if err != nil || n != 1 {
		t.Errorf("CollectGarbage = %d, %v, want 1 removed", n, err)
	}
	after, _ := chunks.Keys()
	if chunks.Has(orphan) || len(after) != len(before) {
		t.Errorf("after collection: orphan present %v, %d chunks, want %d", chunks.Has(orphan), len(after), len(before))
	}
}
