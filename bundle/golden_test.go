package bundle

import (
	"bytes"
	"crypto"
	"os"
	"path/filepath"
	"testing"
)

// Golden bundles in testdata/ are built from smallSpec with the fixed test
// keys. They are rewritten only with UPDATE_GOLDEN=1; otherwise the test
// checks that the builder still produces them byte for byte. Other packages
// may use them too: testdata/test-vendor.pub and test-operator.pub verify
// them (the matching .key files are test-only keys derived from public
// seeds).
var goldens = []struct {
	file string
	keys []string
}{
	{"golden.apb", []string{"vendor"}},
	{"golden-2sig.apb", []string{"vendor", "operator"}},
}

func TestGolden(t *testing.T) {
	update := os.Getenv("UPDATE_GOLDEN") == "1"
	if update {
		for _, name := range []string{"vendor", "operator"} {
			k := seedKey(name)
			priv, _ := MarshalPrivateKey(k)
			pub, _ := MarshalPublicKey(k.Public())
			os.WriteFile(filepath.Join("testdata", "test-"+name+".key"), priv, 0o600)
			os.WriteFile(filepath.Join("testdata", "test-"+name+".pub"), pub, 0o644)
		}
	}
	for _, g := range goldens {
		t.Run(g.file, func(t *testing.T) {
			var keys []crypto.Signer
			for _, k := range g.keys {
				keys = append(keys, seedKey(k))
			}
			got := buildSpec(t, smallSpec(t.TempDir()), keys...)
			path := filepath.Join("testdata", g.file)
			if update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("builder output differs from %s (%d bytes, want %d); if the format changed on purpose, run with UPDATE_GOLDEN=1", path, len(got), len(want))
			}
			// The published test keys verify the golden bundle.
			trust := &Trust{Threshold: len(g.keys)}
			for _, k := range g.keys {
				pemBytes, err := os.ReadFile(filepath.Join("testdata", "test-"+k+".pub"))
				if err != nil {
					t.Fatal(err)
				}
				pub, err := ReadPublicKey(pemBytes)
				if err != nil {
					t.Fatal(err)
				}
				trust.Keys = append(trust.Keys, pub)
			}
			if _, err := readAll(want, trust); err != nil {
				t.Errorf("golden %s does not verify with the test keys: %v", g.file, err)
			}
		})
	}
}
