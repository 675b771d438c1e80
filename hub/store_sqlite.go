package hub

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go)
)

// now is the hub's clock; every timestamp the store writes comes from it.
var now = time.Now

// SQLite is the default Store: one database file in WAL mode, written through a
// single connection (writers queue in Go instead of sleeping in SQLite's busy
// handler) and read through a small pool that WAL lets run beside the writer.
type SQLite struct {
	w  *sql.DB    // one connection: every write and every read-modify-write transaction
	r  *sql.DB    // readers
	mu sync.Mutex // serialises writers that read-then-write (audit chain, steps)
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating if needed) the database at path and applies pending migrations.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	if _, err := migrate(ctx, w, sqliteMigrations); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	return &SQLite{w: w, r: r}, nil
}

// SchemaVersion reports the applied migration version.
func (s *SQLite) SchemaVersion(ctx context.Context) (int, error) { return schemaVersion(ctx, s.r) }

// Close closes the database.
func (s *SQLite) Close() error {
	err := s.r.Close()
	if werr := s.w.Close(); err == nil {
		err = werr
	}
	return err
}

func (s *SQLite) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// ---- bundles

func (s *SQLite) PutBundle(ctx context.Context, b *BundleRecord, chunks []ChunkRef) error {
	if b.Manifest == nil {
		b.Manifest = []byte{}
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO bundles
			(name, version, security_version, digest, manifest, size, created, uploaded_by)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			b.Name, b.Version, int64(b.SecurityVersion), b.Digest, b.Manifest, b.Size, b.Created.UnixNano(), b.UploadedBy)
		if isUnique(err) {
			return fmt.Errorf("store bundle %s@%s: %w", b.Name, b.Version, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("store bundle %s@%s: %w", b.Name, b.Version, err)
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO bundle_chunks
			(name, version, component, idx, chunk_key, size) VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, c := range chunks {
			if _, err := st.ExecContext(ctx, b.Name, b.Version, c.Component, c.Index, c.Key, c.Size); err != nil {
				return fmt.Errorf("store chunk %d/%d of %s@%s: %w", c.Component, c.Index, b.Name, b.Version, err)
			}
		}
		return nil
	})
}

const bundleCols = `name, version, security_version, digest, manifest, size, created, uploaded_by`

func scanBundle(sc interface{ Scan(...any) error }) (*BundleRecord, error) {
	var b BundleRecord
	var sv, created int64
	if err := sc.Scan(&b.Name, &b.Version, &sv, &b.Digest, &b.Manifest, &b.Size, &created, &b.UploadedBy); err != nil {
		return nil, err
	}
	b.SecurityVersion = uint64(sv)
	b.Created = time.Unix(0, created).UTC()
	return &b, nil
}

func (s *SQLite) Bundle(ctx context.Context, name, version string) (*BundleRecord, error) {
	b, err := scanBundle(s.r.QueryRowContext(ctx, `SELECT `+bundleCols+` FROM bundles WHERE name = ? AND version = ?`, name, version))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("bundle %s@%s: %w", name, version, ErrNotFound)
	}
	return b, err
}

func (s *SQLite) Bundles(ctx context.Context) ([]BundleRecord, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+bundleCols+` FROM bundles ORDER BY name, created`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BundleRecord
	for rows.Next() {
		b, err := scanBundle(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *b)
	}
	return out, rows.Err()
}

func (s *SQLite) BundleChunks(ctx context.Context, name, version string) ([]ChunkRef, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT component, idx, chunk_key, size FROM bundle_chunks
		WHERE name = ? AND version = ? ORDER BY component, idx`, name, version)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ChunkRef
	for rows.Next() {
		var c ChunkRef
		if err := rows.Scan(&c.Component, &c.Index, &c.Key, &c.Size); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func (s *SQLite) DeleteBundle(ctx context.Context, name, version string) ([]string, error) {
	var orphans []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM bundles WHERE name = ? AND version = ?`, name, version).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("delete bundle %s@%s: %w", name, version, ErrNotFound)
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deployments WHERE bundle = ? AND version = ? AND final = 0`,
			name, version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("delete bundle %s@%s: %d active deployment(s): %w", name, version, n, ErrInUse)
		}
		rows, err := tx.QueryContext(ctx, `SELECT DISTINCT chunk_key FROM bundle_chunks
			WHERE name = ? AND version = ? AND chunk_key NOT IN
			(SELECT chunk_key FROM bundle_chunks WHERE NOT (name = ? AND version = ?))`, name, version, name, version)
		if err != nil {
			return err
		}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return err
			}
			orphans = append(orphans, k)
		}
		rows.Close()
		// Finished deployments keep their history: they name the bundle without a foreign key.
		_, err = tx.ExecContext(ctx, `DELETE FROM bundles WHERE name = ? AND version = ?`, name, version)
		return err
	})
	return orphans, err
}

func (s *SQLite) ChunkKeys(ctx context.Context) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT DISTINCT chunk_key FROM bundle_chunks`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// ---- devices

const deviceCols = `id, status, hardware, credential_hash, cert_sha256, inventory, last_result, last_seen, online, created`

func scanDevice(sc interface{ Scan(...any) error }) (*Device, error) {
	var d Device
	var inv string
	var seen, created int64
	var online int
	if err := sc.Scan(&d.ID, &d.Status, &d.Hardware, &d.CredentialHash, &d.CertSHA256, &inv, &d.LastResult, &seen, &online, &created); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(inv), &d.Inventory); err != nil {
		return nil, fmt.Errorf("decode inventory of %s: %w", d.ID, err)
	}
	if seen != 0 {
		d.LastSeen = time.Unix(0, seen).UTC()
	}
	d.Created = time.Unix(0, created).UTC()
	d.Online = online != 0
	return &d, nil
}

func deviceArgs(d *Device) ([]any, error) {
	inv, err := json.Marshal(d.Inventory)
	if err != nil {
		return nil, err
	}
	var seen int64
	if !d.LastSeen.IsZero() {
		seen = d.LastSeen.UnixNano()
	}
	online := 0
	if d.Online {
		online = 1
	}
	return []any{d.ID, string(d.Status), d.Hardware, d.CredentialHash, d.CertSHA256, string(inv), d.LastResult, seen, online, d.Created.UnixNano()}, nil
}

func (s *SQLite) PutDevice(ctx context.Context, d *Device) error {
	if !d.Status.Valid() {
		return fmt.Errorf("store device %s: invalid status %q", d.ID, d.Status)
	}
	if d.Created.IsZero() {
		d.Created = now().UTC()
	}
	args, err := deviceArgs(d)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
	if isUnique(err) {
		return fmt.Errorf("store device %s: %w", d.ID, ErrExists)
	}
	return err
}

func (s *SQLite) Device(ctx context.Context, id string) (*Device, error) {
	d, err := scanDevice(s.r.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("device %s: %w", id, ErrNotFound)
	}
	return d, err
}

func (s *SQLite) Devices(ctx context.Context, f DeviceFilter) ([]Device, error) {
	q := `SELECT ` + deviceCols + ` FROM devices WHERE 1 = 1`
	var args []any
	if f.Status != "" {
		q += ` AND status = ?`
		args = append(args, string(f.Status))
	}
	if f.Hardware != "" {
		q += ` AND hardware = ?`
		args = append(args, f.Hardware)
	}
	if f.Online != nil {
		q += ` AND online = ?`
		if *f.Online {
			args = append(args, 1)
		} else {
			args = append(args, 0)
		}
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	return out, rows.Err()
}

func (s *SQLite) SetDeviceStatus(ctx context.Context, id string, st DeviceStatus) error {
	if !st.Valid() {
		return fmt.Errorf("set status of %s: invalid status %q", id, st)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE devices SET status = ? WHERE id = ?`, string(st), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("device %s: %w", id, ErrNotFound)
	}
	return nil
}

func (s *SQLite) UpdateDevice(ctx context.Context, id string, fn func(*Device) error) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("device %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := fn(d); err != nil {
			return err
		}
		d.ID = id
		if !d.Status.Valid() {
			return fmt.Errorf("update device %s: invalid status %q", id, d.Status)
		}
		args, err := deviceArgs(d)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE devices SET status = ?, hardware = ?, credential_hash = ?, cert_sha256 = ?,
			inventory = ?, last_result = ?, last_seen = ?, online = ?, created = ? WHERE id = ?`, append(args[1:], id)...)
		return err
	})
}

// ---- deployments

func (s *SQLite) CreateDeployment(ctx context.Context, d *Deployment) error {
	t := now().UTC()
	d.Created, d.Updated = t, t
	if d.State == "" {
		d.State = DeployOffered
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO deployments (bundle, version, device, state, final, created, updated)
			VALUES (?, ?, ?, ?, 0, ?, ?)`, d.Bundle, d.Version, d.Device, d.State, t.UnixNano(), t.UnixNano())
		if err != nil {
			return fmt.Errorf("create deployment of %s@%s to %s: %w", d.Bundle, d.Version, d.Device, err)
		}
		if d.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		detail := "" // a caller may pass the first step's detail in Steps[0]
		if len(d.Steps) > 0 {
			detail = d.Steps[0].Detail
		}
		d.Steps = []Step{{State: d.State, Detail: detail, At: t}}
		_, err = tx.ExecContext(ctx, `INSERT INTO deployment_steps (deployment, seq, state, detail, at) VALUES (?, 1, ?, ?, ?)`,
			d.ID, d.State, detail, t.UnixNano())
		return err
	})
}

const deploymentCols = `id, bundle, version, device, state, created, updated`

func scanDeployment(sc interface{ Scan(...any) error }) (*Deployment, error) {
	var d Deployment
	var created, updated int64
	if err := sc.Scan(&d.ID, &d.Bundle, &d.Version, &d.Device, &d.State, &created, &updated); err != nil {
		return nil, err
	}
	d.Created, d.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return &d, nil
}

func (s *SQLite) Deployment(ctx context.Context, id int64) (*Deployment, error) {
	d, err := scanDeployment(s.r.QueryRowContext(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("deployment %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT state, detail, at FROM deployment_steps WHERE deployment = ? ORDER BY seq`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var st Step
		var at int64
		if err := rows.Scan(&st.State, &st.Detail, &at); err != nil {
			return nil, err
		}
		st.At = time.Unix(0, at).UTC()
		d.Steps = append(d.Steps, st)
	}
	return d, rows.Err()
}

func (s *SQLite) Deployments(ctx context.Context, device string, activeOnly bool) ([]Deployment, error) {
	q := `SELECT ` + deploymentCols + ` FROM deployments WHERE 1 = 1`
	var args []any
	if device != "" {
		q += ` AND device = ?`
		args = append(args, device)
	}
	if activeOnly {
		q += ` AND final = 0`
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY id DESC`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Deployment
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	return out, rows.Err()
}

func (s *SQLite) AddStep(ctx context.Context, id int64, st Step) error {
	if st.At.IsZero() {
		st.At = now().UTC()
	}
	final := 0
	if Final(st.State) {
		final = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tx(ctx, func(tx *sql.Tx) error {
		var seq sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(seq) FROM deployment_steps WHERE deployment = ?`, id).Scan(&seq); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE deployments SET state = ?, final = ?, updated = ? WHERE id = ?`,
			st.State, final, st.At.UnixNano(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("deployment %d: %w", id, ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO deployment_steps (deployment, seq, state, detail, at) VALUES (?, ?, ?, ?, ?)`,
			id, seq.Int64+1, st.State, st.Detail, st.At.UnixNano())
		return err
	})
}

// ---- audit

func (s *SQLite) AppendAudit(ctx context.Context, e *AuditEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tx(ctx, func(tx *sql.Tx) error {
		var seq sql.NullInt64
		var prev sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		e.Seq = seq.Int64 + 1
		if e.At.IsZero() {
			e.At = now().UTC()
		}
		e.At = time.Unix(0, e.At.UnixNano()).UTC()
		e.chain(prev.String)
		_, err = tx.ExecContext(ctx, `INSERT INTO audit (seq, at, actor, action, target, detail, prev, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, e.Seq, e.At.UnixNano(), e.Actor, e.Action, e.Target, e.Detail, e.Prev, e.Hash)
		if err != nil {
			return fmt.Errorf("append audit entry: %w", err)
		}
		return nil
	})
}

func (s *SQLite) Audit(ctx context.Context, after int64, limit int) ([]AuditEntry, error) {
	q := `SELECT seq, at, actor, action, target, detail, prev, hash FROM audit WHERE seq > ? ORDER BY seq`
	args := []any{after}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.Prev, &e.Hash); err != nil {
			return nil, err
		}
		e.At = time.Unix(0, at).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}
