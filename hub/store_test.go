package hub

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
)

func openTestStore(t *testing.T) *SQLite {
	t.Helper()
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	want := sqliteMigrations[len(sqliteMigrations)-1].version
	if got, err := s.SchemaVersion(ctx); err != nil || got != want {
		t.Errorf("SchemaVersion() = %d, %v, want %d", got, err, want)
	}
	if err := s.PutDevice(ctx, &Device{ID: "d1", Status: StatusPending}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Reopening applies nothing twice and keeps the data.
	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if _, err := s.Device(ctx, "d1"); err != nil {
		t.Errorf("Device(d1) after reopen: %v", err)
	}
	var rows int
	s.w.QueryRow(`SELECT COUNT(*) FROM schema_version`).Scan(&rows)
	if rows != len(sqliteMigrations) {
		t.Errorf("schema_version rows = %d, want %d", rows, len(sqliteMigrations))
	}
	var fk, busy int
	var mode string
	s.w.QueryRow(`PRAGMA foreign_keys`).Scan(&fk)
	s.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	s.w.QueryRow(`PRAGMA busy_timeout`).Scan(&busy)
	if fk != 1 || mode != "wal" || busy != 5000 {
		t.Errorf("pragmas foreign_keys=%d journal_mode=%s busy_timeout=%d, want 1 wal 5000", fk, mode, busy)
	}
	s.Close()
}

func TestMigrationFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ms := []migration{
		{1, []string{`CREATE TABLE a (x INTEGER)`}},
		{2, []string{`CREATE TABLE b (x INTEGER)`, `THIS IS NOT SQL`}},
	}
	v, err := migrate(ctx, db, ms)
	if err == nil {
		t.Fatal("migrate with a broken migration succeeded")
	}
	if v != 1 {
		t.Errorf("version after failure = %d, want 1", v)
	}
	if _, err := db.Exec(`INSERT INTO b VALUES (1)`); err == nil {
		t.Error("table b of the failed migration exists; the migration was not rolled back")
	}
	if got, _ := schemaVersion(ctx, db); got != 1 {
		t.Errorf("schemaVersion = %d, want 1", got)
	}
	// A newer database than the code is refused.
	if _, err := migrate(ctx, db, ms[:0:0]); err != nil {
		t.Errorf("migrate with no migrations: %v", err)
	}
	if _, err := migrate(ctx, db, []migration{{0, nil}}); err == nil {
		t.Error("migrate accepted a database newer than its migrations")
	}
}

func TestDevicesFilter(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	for _, d := range []Device{
		{ID: "a", Status: StatusPending, Hardware: "rpi4"},
		{ID: "b", Status: StatusAccepted, Hardware: "rpi4", Online: true},
		{ID: "c", Status: StatusAccepted, Hardware: "x86"},
	} {
		if err := s.PutDevice(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutDevice(ctx, &Device{ID: "a", Status: StatusPending}); !errors.Is(err, ErrExists) {
		t.Errorf("PutDevice(duplicate) = %v, want ErrExists", err)
	}
	yes := true
	tests := []struct {
		f    DeviceFilter
		want string
	}{
		{DeviceFilter{}, "abc"},
		{DeviceFilter{Status: StatusPending}, "a"},
		{DeviceFilter{Hardware: "rpi4"}, "ab"},
		{DeviceFilter{Online: &yes}, "b"},
		{DeviceFilter{Status: StatusAccepted, Hardware: "x86"}, "c"},
	}
	for _, tt := range tests {
		ds, err := s.Devices(ctx, tt.f)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, d := range ds {
			got += d.ID
		}
		if got != tt.want {
			t.Errorf("Devices(%+v) = %q, want %q", tt.f, got, tt.want)
		}
	}
	err := s.UpdateDevice(ctx, "a", func(d *Device) error {
		d.Inventory.Slots = map[string]string{"A": "1.0"}
		d.Online = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := s.Device(ctx, "a")
	if d.Inventory.Slots["A"] != "1.0" || !d.Online {
		t.Errorf("after UpdateDevice: %+v", d)
	}
	if err := s.SetDeviceStatus(ctx, "zz", StatusAccepted); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetDeviceStatus(unknown) = %v, want ErrNotFound", err)
	}
}

func TestBundleDeleteRefcount(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	put := func(v string, keys ...string) {
		var refs []ChunkRef
		for i, k := range keys {
			refs = append(refs, ChunkRef{Index: i, Key: k, Size: 1})
		}
		if err := s.PutBundle(ctx, &BundleRecord{Name: "app", Version: v, Manifest: []byte("m")}, refs); err != nil {
			t.Fatal(err)
		}
	}
	put("1", "k1", "k2")
	put("2", "k2", "k3")
	if err := s.PutBundle(ctx, &BundleRecord{Name: "app", Version: "1"}, nil); !errors.Is(err, ErrExists) {
		t.Errorf("PutBundle(duplicate) = %v, want ErrExists", err)
	}
	if err := s.PutDevice(ctx, &Device{ID: "d", Status: StatusAccepted}); err != nil {
		t.Fatal(err)
	}
	dep := &Deployment{Bundle: "app", Version: "2", Device: "d"}
	if err := s.CreateDeployment(ctx, dep); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBundle(ctx, "app", "2"); !errors.Is(err, ErrInUse) {
		t.Errorf("DeleteBundle(active) = %v, want ErrInUse", err)
	}
	orphans, err := s.DeleteBundle(ctx, "app", "1")
	if err != nil {
		t.Fatal(err)
	}
	if len(orphans) != 1 || orphans[0] != "k1" {
		t.Errorf("orphans = %v, want [k1]", orphans)
	}
	if err := s.AddStep(ctx, dep.ID, Step{State: DeploySucceeded}); err != nil {
		t.Fatal(err)
	}
	orphans, err = s.DeleteBundle(ctx, "app", "2")
	if err != nil {
		t.Fatal(err)
	}
	if len(orphans) != 2 {
		t.Errorf("orphans = %v, want [k2 k3]", orphans)
	}
	got, err := s.Deployment(ctx, dep.ID)
	if err != nil {
		t.Fatalf("finished deployment lost with its bundle: %v", err)
	}
	if len(got.Steps) != 2 || got.Steps[1].State != DeploySucceeded || got.State != DeploySucceeded {
		t.Errorf("deployment = %+v", got)
	}
}

func TestAuditTamper(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	for _, a := range []string{"bundle.upload", "device.accept", "deploy"} {
		if err := s.AppendAudit(ctx, &AuditEntry{Actor: "alice", Action: a, Target: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := VerifyStoreAudit(ctx, s); err != nil {
		t.Fatalf("untouched log: %v", err)
	}
	tamper := []struct {
		name string
		sql  string
	}{
		{"edit actor", `UPDATE audit SET actor = 'mallory' WHERE seq = 2`},
		{"edit time", `UPDATE audit SET at = at + 1 WHERE seq = 1`},
		{"delete middle", `DELETE FROM audit WHERE seq = 2`},
		{"rehash one row", `UPDATE audit SET detail = 'x', hash = prev WHERE seq = 3`},
	}
	for _, tt := range tamper {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t)
			for i := 0; i < 3; i++ {
				s.AppendAudit(ctx, &AuditEntry{Actor: "alice", Action: "a", Detail: "d"})
			}
			if _, err := s.w.Exec(tt.sql); err != nil {
				t.Fatal(err)
			}
			if err := VerifyStoreAudit(ctx, s); !errors.Is(err, ErrAuditTampered) {
				t.Errorf("VerifyStoreAudit after %s = %v, want ErrAuditTampered", tt.name, err)
			}
		})
	}
}

func TestChunksDedup(t *testing.T) {
	c, err := OpenChunks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key := ChunkKey(make([]byte, 32), "zstd")
	if wrote, err := c.Put(key, []byte("hello")); err != nil || !wrote {
		t.Fatalf("Put = %v, %v", wrote, err)
	}
	if wrote, err := c.Put(key, []byte("hello")); err != nil || wrote {
		t.Errorf("second Put = %v, %v, want false, nil", wrote, err)
	}
	n, size, _ := c.Usage()
	if n != 1 || size != 5 {
		t.Errorf("Usage = %d, %d, want 1, 5", n, size)
	}
	if _, err := c.Put("../../etc/passwd", nil); err == nil {
		t.Error("Put accepted a path as key")
	}
	c.Remove(key)
	if _, err := c.Get(key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(removed) = %v, want ErrNotFound", err)
	}
}

func TestOpenStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tests := []struct {
		url  string
		want error
		ok   bool
	}{
		{"", nil, true},
		{"sqlite:" + filepath.Join(dir, "other.db"), nil, true},
		{"sqlite:", nil, false},
		{"postgres://hub@db/hub", ErrNoBackend, false},
	}
	for _, tt := range tests {
		s, err := OpenStore(ctx, tt.url, dir)
		if (err == nil) != tt.ok || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("OpenStore(%q) = %v, want ok=%v (%v)", tt.url, err, tt.ok, tt.want)
		}
		if s != nil {
			s.Close()
		}
	}
}
