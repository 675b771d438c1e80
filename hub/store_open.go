package hub

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// ErrNoBackend reports a store URL whose backend this hub was built without.
var ErrNoBackend = errors.New("hub: store backend not available")

// OpenStore opens the store named by url: "" or "sqlite:PATH" (default
// DATA/hub.db) for SQLite. Other schemes (postgres://…) name backends that plug in
// here behind the same Store interface; callers do not change.
func OpenStore(ctx context.Context, url, dataDir string) (Store, error) {
	switch {
	case url == "":
		return OpenSQLite(ctx, filepath.Join(dataDir, "hub.db"))
	case strings.HasPrefix(url, "sqlite:"):
		p := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite:"), "//")
		if p == "" {
			return nil, fmt.Errorf("open store %q: empty path", url)
		}
		return OpenSQLite(ctx, p)
	}
	scheme, _, _ := strings.Cut(url, ":")
	return nil, fmt.Errorf("open store: %q: %w (this hub has: sqlite)", scheme, ErrNoBackend)
}
