package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
)

// TestExampleSpec keeps examples/demo/bundle.yaml, which the README uses,
// valid: it parses, and it describes an image, a package and a file with
// dependencies in a resolvable order.
func TestExampleSpec(t *testing.T) {
	s, err := bundle.LoadSpec(filepath.Join("..", "..", "examples", "demo", "bundle.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Manifest(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[bundle.Kind]bool{}
	for _, c := range m.Components {
		kinds[c.Kind] = true
	}
	if !kinds[bundle.KindImage] || !kinds[bundle.KindPackage] || !kinds[bundle.KindFile] {
		t.Errorf("example kinds = %v, want image, package and file", kinds)
	}
	order, err := m.InstallOrder()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range order {
		names = append(names, m.Components[i].Name)
	}
	want := []string{"rootfs", "gateway-app", "gateway-conf"}
	for i := range want {
		if i >= len(names) || names[i] != want[i] {
			t.Fatalf("install order = %v, want %v", names, want)
		}
	}
}
