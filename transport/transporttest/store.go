package transporttest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/transport"
)

// Store is an in-memory transport.ChunkStore serving whole .apb files.
type Store struct {
	mu      sync.Mutex
	bundles map[string]*stored
}

type stored struct {
	file   []byte
	signed []byte
	m      *bundle.Manifest
	layout [][]bundle.Extent
}

// NewStore returns an empty Store.
func NewStore() *Store { return &Store{bundles: map[string]*stored{}} }

// Add opens apb (verifying it against trust) and serves it as offerID. It
// returns the manifest and the sha256 of the signed manifest (Offer.Digest).
func (s *Store) Add(offerID string, apb []byte, trust *bundle.Trust) (*bundle.Manifest, []byte, error) {
	r, err := bundle.Open(bytes.NewReader(apb), trust)
	if err != nil {
		return nil, nil, fmt.Errorf("add bundle %s: %w", offerID, err)
	}
	defer r.Close()
	st := &stored{file: apb, signed: r.SignedManifest(), m: r.Manifest()}
	st.layout = bundle.Layout(st.m, r.DataOffset())
	s.mu.Lock()
	s.bundles[offerID] = st
	s.mu.Unlock()
	sum := sha256.Sum256(st.signed)
	return st.m, sum[:], nil
}

func (s *Store) get(offerID string) (*stored, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.bundles[offerID]
	if !ok {
		return nil, fmt.Errorf("bundle of offer %q: %w", offerID, transport.ErrNotFound)
	}
	return st, nil
}

// Chunk implements transport.ChunkStore.
func (s *Store) Chunk(offerID string, comp, idx int) ([]byte, error) {
	st, err := s.get(offerID)
	if err != nil {
		return nil, err
	}
	if comp < 0 || comp >= len(st.layout) || idx < 0 || idx >= len(st.layout[comp]) {
		return nil, fmt.Errorf("component %d chunk %d of offer %q: %w", comp, idx, offerID, transport.ErrNotFound)
	}
	e := st.layout[comp][idx]
	return st.file[e.Offset : e.Offset+e.Length], nil
}

// Manifest implements transport.ChunkStore.
func (s *Store) Manifest(offerID string) ([]byte, error) {
	st, err := s.get(offerID)
	if err != nil {
		return nil, err
	}
	return st.signed, nil
}

// Progress is an in-memory transport.Progress; share one between Fetchers to
// simulate progress persisted across a restart. OnMark, when set, is called
// after every MarkDone with the number of chunks done so far.
type Progress struct {
	mu     sync.Mutex
	done   map[[2]int]bool
	OnMark func(n int)
}

// Done implements transport.Progress.
func (p *Progress) Done(comp, idx int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done[[2]int{comp, idx}]
}

// MarkDone implements transport.Progress.
func (p *Progress) MarkDone(comp, idx int) error {
	p.mu.Lock()
	if p.done == nil {
		p.done = map[[2]int]bool{}
	}
	p.done[[2]int{comp, idx}] = true
	n := len(p.done)
	f := p.OnMark
	p.mu.Unlock()
	if f != nil {
		f(n)
	}
	return nil
}

// Count is the number of chunks marked done.
func (p *Progress) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.done)
}

// Local is an in-memory transport.Local: the chunks of an installed image.
type Local map[[32]byte][]byte

// NewLocal indexes the chunks of img as described by comp's chunk table.
func NewLocal(comp *bundle.Component, img []byte) Local {
	l := Local{}
	for _, ch := range comp.Chunks {
		var k [32]byte
		copy(k[:], ch.SHA256)
		l[k] = img[ch.Offset : ch.Offset+uint64(ch.Length)]
	}
	return l
}

// ReadChunk implements transport.Local.
func (l Local) ReadChunk(sum []byte, dst []byte) (bool, error) {
	var k [32]byte
	copy(k[:], sum)
	b, ok := l[k]
	if !ok || len(b) != len(dst) {
		return false, nil
	}
	copy(dst, b)
	return true, nil
}
