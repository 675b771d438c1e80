package hub

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one numbered schema change. Migrations run in order, each in its own
// transaction together with the schema_version row that records it.
type migration struct {
	version int
	stmts   []string
}

// sqliteMigrations is the schema of the SQLite store. The SQL is kept portable
// (no SQLite-only types or functions) so a PostgreSQL list can mirror it one to one;
// only the identity column differs there.
var sqliteMigrations = []migration{
	{1, []string{
		`CREATE TABLE bundles (
			name TEXT NOT NULL,
			version TEXT NOT NULL,
			security_version BIGINT NOT NULL,
			digest TEXT NOT NULL,
			manifest BLOB NOT NULL,
			size BIGINT NOT NULL,
			created BIGINT NOT NULL,
			uploaded_by TEXT NOT NULL,
			PRIMARY KEY (name, version))`,
		`CREATE TABLE bundle_chunks (
			name TEXT NOT NULL,
			version TEXT NOT NULL,
			component INTEGER NOT NULL,
			idx INTEGER NOT NULL,
			chunk_key TEXT NOT NULL,
			size BIGINT NOT NULL,
			PRIMARY KEY (name, version, component, idx),
			FOREIGN KEY (name, version) REFERENCES bundles (name, version) ON DELETE CASCADE)`,
		`CREATE INDEX bundle_chunks_key ON bundle_chunks (chunk_key)`,
		`CREATE TABLE devices (
			id TEXT PRIMARY KEY,
			status TEXT NOT NULL,
			hardware TEXT NOT NULL,
			credential_hash TEXT NOT NULL,
			cert_sha256 TEXT NOT NULL,
			inventory TEXT NOT NULL,
			last_result TEXT NOT NULL,
			last_seen BIGINT NOT NULL,
			online INTEGER NOT NULL,
			created BIGINT NOT NULL)`,
		`CREATE INDEX devices_status ON devices (status)`,
		`CREATE TABLE deployments (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			bundle TEXT NOT NULL,
			version TEXT NOT NULL,
			device TEXT NOT NULL REFERENCES devices (id),
			state TEXT NOT NULL,
			final INTEGER NOT NULL,
			created BIGINT NOT NULL,
			updated BIGINT NOT NULL)`,
		`CREATE INDEX deployments_device ON deployments (device, final)`,
		`CREATE TABLE deployment_steps (
			deployment INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
			seq INTEGER NOT NULL,
			state TEXT NOT NULL,
			detail TEXT NOT NULL,
			at BIGINT NOT NULL,
			PRIMARY KEY (deployment, seq))`,
		`CREATE TABLE audit (
			seq BIGINT PRIMARY KEY,
			at BIGINT NOT NULL,
			actor TEXT NOT NULL,
			action TEXT NOT NULL,
			target TEXT NOT NULL,
			detail TEXT NOT NULL,
			prev TEXT NOT NULL,
			hash TEXT NOT NULL)`,
	}},
}

// migrate brings db up to the last migration in ms and returns the resulting version.
func migrate(ctx context.Context, db *sql.DB, ms []migration) (int, error) {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version INTEGER PRIMARY KEY, applied BIGINT NOT NULL)`); err != nil {
		return 0, fmt.Errorf("create schema_version: %w", err)
	}
	cur, err := schemaVersion(ctx, db)
	if err != nil {
		return 0, err
	}
	if len(ms) > 0 && cur > ms[len(ms)-1].version {
		return cur, fmt.Errorf("open store: schema version %d is newer than this hub (%d)", cur, ms[len(ms)-1].version)
	}
	for _, m := range ms {
		if m.version <= cur {
			continue
		}
		if err := applyMigration(ctx, db, m); err != nil {
			return cur, err
		}
		cur = m.version
	}
	return cur, nil
}

func applyMigration(ctx context.Context, db *sql.DB, m migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate to %d: %w", m.version, err)
	}
	defer tx.Rollback()
	for i, s := range m.stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("migrate to %d, statement %d: %w", m.version, i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied) VALUES (?, ?)`,
		m.version, now().Unix()); err != nil {
		return fmt.Errorf("migrate to %d: %w", m.version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate to %d: %w", m.version, err)
	}
	return nil
}

func schemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v.Int64), nil
}
