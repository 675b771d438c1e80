package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/autopatcher/autopatcher/hub"
)

// client talks to a hub's HTTP API.
type client struct {
	base  string
	token string
	http  *http.Client
}

// clientFlagSet returns the flag set of client command name with --hub,
// --token and --json, and connect, which makes the client once the flags are parsed.
func clientFlagSet(name string, stderr io.Writer) (fs *flag.FlagSet, asJSON *bool, connect func() (*client, error)) {
	fs = flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON = fs.Bool("json", false, "print JSON")
	def := os.Getenv("AUTOPATCH_HUB")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	base := fs.String("hub", def, "hub API URL (env AUTOPATCH_HUB)")
	token := fs.String("token", "", "API token (default env AUTOPATCH_TOKEN)")
	return fs, asJSON, func() (*client, error) {
		t := *token
		if t == "" {
			t = os.Getenv("AUTOPATCH_TOKEN")
		}
		if t == "" {
			return nil, fmt.Errorf("no API token: set AUTOPATCH_TOKEN or pass --token")
		}
		return &client{base: strings.TrimRight(*base, "/"), token: t, http: http.DefaultClient}, nil
	}
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *client) do(ctx context.Context, method, path string, body io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if size > 0 {
		req.ContentLength = size
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e hub.ErrorResponse
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("hub: %s (%d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("hub: %s %s: %s", method, path, resp.Status)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// splitRef splits NAME@VERSION.
func splitRef(s string) (string, string, error) {
	name, version, ok := strings.Cut(s, "@")
	if !ok || name == "" || version == "" {
		return "", "", fmt.Errorf("bundle %q: want NAME@VERSION", s)
	}
	return name, version, nil
}
