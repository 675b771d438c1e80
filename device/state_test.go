package device

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSaveWithoutHardLinks saves on a file system that cannot hard-link
// (FAT): the previous copy is kept by copying instead.
func TestSaveWithoutHardLinks(t *testing.T) {
	old := linkFile
	linkFile = func(oldname, newname string) error {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: syscall.EPERM}
	}
	t.Cleanup(func() { linkFile = old })
	for _, name := range []string{"", journalName} {
		t.Run(fmt.Sprintf("name=%q", name), func(t *testing.T) {
			s := &Store{Dir: t.TempDir(), Name: name}
			for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
				if err := s.Save(&Record{State: Committed, Current: &BundleInfo{Name: "os", Version: v}}); err != nil {
					t.Fatalf("save %s: %v", v, err)
				}
			}
			rec, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rec.Current.Version, "3.0.0"; got != want {
				t.Errorf("current version = %s, want %s", got, want)
			}
			prev, err := s.LoadPrevious()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := prev.Current.Version, "2.0.0"; got != want {
				t.Errorf("previous version = %s, want %s", got, want)
			}
			left, _ := filepath.Glob(filepath.Join(s.Dir, "*.tmp"))
			if len(left) != 0 {
				t.Errorf("temp files left: %v", left)
			}
		})
	}
}
