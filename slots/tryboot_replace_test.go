package slots

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReplaceFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := ReplaceFile(path, []byte("one"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	// A leftover temporary file (power cut) is replaced, never appended to.
	os.WriteFile(path+".tmp", []byte("stale stale stale"), 0o600)
	if err := ReplaceFile(path, []byte("two"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "two" {
		t.Errorf("content %q, want two", got)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := ReplaceFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600, nil); err == nil {
		t.Error("replace in a missing directory succeeded")
	}
}

// BenchmarkReplaceFile measures what atomicity costs a bootloader-state
// write (a 1 KiB grubenv-sized block): replaceFile (temporary file, fsync,
// rename, directory fsync) against the physical floor, the same bytes
// written in place and fsynced, in the same run. ratio = in-place time /
// replace time (1 would be free).
func BenchmarkReplaceFile(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, GrubEnvSize)
	const rounds = 30
	var ref, rep time.Duration
	for i := 0; i < b.N; i++ {
		inPlace := filepath.Join(dir, "inplace")
		start := time.Now()
		for r := 0; r < rounds; r++ {
			f, err := os.OpenFile(inPlace, os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.WriteAt(data, 0); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		ref += time.Since(start)
		start = time.Now()
		for r := 0; r < rounds; r++ {
			if err := ReplaceFile(filepath.Join(dir, "replaced"), data, 0o644, nil); err != nil {
				b.Fatal(err)
			}
		}
		rep += time.Since(start)
	}
	b.ReportMetric(float64(ref)/float64(rep), "ratio")
	b.ReportMetric(float64(b.N*rounds)/rep.Seconds(), "replaces/s")
	b.ReportMetric(float64(b.N*rounds)/ref.Seconds(), "inplace-fsyncs/s")
}
