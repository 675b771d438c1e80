package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
)

// inspect shows what a bundle claims to be, without verifying signatures.
func inspect(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	chunks := fs.Bool("chunks", false, "list every chunk")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("inspect: want one FILE.apb")
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	defer f.Close()
	info, err := bundle.Inspect(f)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", pos[0], err)
	}
	v := newView(info, *chunks)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	}
	printView(stdout, v)
	return nil
}

// view is the JSON form of a bundle for inspect --json.
type view struct {
	Verified      bool               `json:"verified"`
	FormatVersion int                `json:"format_version"`
	Name          string             `json:"name"`
	Version       string             `json:"version"`
	Security      uint64             `json:"security_version"`
	Compatible    []string           `json:"compatible"`
	Created       string             `json:"created"`
	Expires       string             `json:"expires,omitempty"`
	Severity      string             `json:"severity"`
	CVEs          []string           `json:"cves,omitempty"`
	Description   string             `json:"description,omitempty"`
	Requires      []depView          `json:"requires,omitempty"`
	Components    []compView         `json:"components"`
	Signatures    []bundle.Signature `json:"signatures"`
	DataOffset    int64              `json:"data_offset"`
	StoredSize    int64              `json:"stored_size"`
}

type depView struct {
	Name       string `json:"name"`
	Constraint string `json:"version,omitempty"`
}

type compView struct {
	Name        string      `json:"name"`
	Kind        string      `json:"kind"`
	Slot        string      `json:"slot,omitempty"`
	Path        string      `json:"path,omitempty"`
	Version     string      `json:"version"`
	Size        uint64      `json:"size"`
	StoredSize  int64       `json:"stored_size"`
	SHA256      string      `json:"sha256"`
	Compression string      `json:"compression"`
	ChunkCount  int         `json:"chunk_count"`
	Chunks      []chunkView `json:"chunks,omitempty"`
	Depends     []depView   `json:"depends,omitempty"`
}

type chunkView struct {
	Offset       uint64 `json:"offset"`
	Length       uint32 `json:"length"`
	StoredLength uint32 `json:"stored_length"`
	SHA256       string `json:"sha256"`
}

func deps(ds []bundle.Dependency) []depView {
	var out []depView
	for _, d := range ds {
		out = append(out, depView{d.Name, d.Constraint})
	}
	return out
}

func unix(t int64) string { return time.Unix(t, 0).UTC().Format(time.RFC3339) }

func newView(info *bundle.Info, withChunks bool) view {
	m := info.Manifest
	v := view{
		FormatVersion: info.FormatVersion, Name: m.Name, Version: m.Version, Security: m.SecurityVersion,
		Compatible: m.Compatible, Created: unix(m.Created), Severity: string(m.Severity), CVEs: m.CVEs,
		Description: m.Description, Requires: deps(m.Requires), Signatures: info.Signatures,
		DataOffset: info.DataOffset, StoredSize: m.StoredSize(),
	}
	if m.Expires != 0 {
		v.Expires = unix(m.Expires)
	}
	for i := range m.Components {
		c := &m.Components[i]
		cv := compView{
			Name: c.Name, Kind: string(c.Kind), Slot: c.Slot, Path: c.Path, Version: c.Version,
			Size: c.Size, StoredSize: c.StoredSize(), SHA256: hex.EncodeToString(c.SHA256),
			Compression: string(c.Compression), ChunkCount: len(c.Chunks), Depends: deps(c.Depends),
		}
		if withChunks {
			for _, ch := range c.Chunks {
				cv.Chunks = append(cv.Chunks, chunkView{ch.Offset, ch.Length, ch.StoredLength, hex.EncodeToString(ch.SHA256)})
			}
		}
		v.Components = append(v.Components, cv)
	}
	return v
}

func printView(w io.Writer, v view) {
	fmt.Fprintf(w, "bundle %s %s (format %d)\n", v.Name, v.Version, v.FormatVersion)
	fmt.Fprintf(w, "  security version %d, severity %s\n", v.Security, v.Severity)
	fmt.Fprintf(w, "  compatible: %s\n", orNone(strings.Join(v.Compatible, ", ")))
	fmt.Fprintf(w, "  created %s, expires %s\n", v.Created, orNone(v.Expires))
	if len(v.CVEs) > 0 {
		fmt.Fprintf(w, "  fixes %s\n", strings.Join(v.CVEs, ", "))
	}
	if v.Description != "" {
		fmt.Fprintf(w, "  %s\n", v.Description)
	}
	if len(v.Requires) > 0 {
		fmt.Fprintf(w, "  requires: %s\n", depString(v.Requires))
	}
	fmt.Fprintf(w, "components:\n")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  NAME\tKIND\tTARGET\tVERSION\tSIZE\tSTORED\tCHUNKS\tCOMPRESSION\tDEPENDS\n")
	for _, c := range v.Components {
		target := c.Slot
		if target == "" {
			target = c.Path
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", c.Name, c.Kind, target, c.Version, c.Size, c.StoredSize, c.ChunkCount, c.Compression, orNone(depString(c.Depends)))
	}
	tw.Flush()
	for _, c := range v.Components {
		fmt.Fprintf(w, "  %s sha256 %s\n", c.Name, c.SHA256)
		for i, ch := range c.Chunks {
			fmt.Fprintf(w, "    chunk %d: offset %d length %d stored %d sha256 %s\n", i, ch.Offset, ch.Length, ch.StoredLength, ch.SHA256)
		}
	}
	fmt.Fprintf(w, "signatures (UNVERIFIED; use mkbundle verify):\n")
	for _, s := range v.Signatures {
		fmt.Fprintf(w, "  %s key %s\n", s.Algorithm, s.KeyID)
	}
}

func depString(ds []depView) string {
	var parts []string
	for _, d := range ds {
		if d.Constraint == "" {
			parts = append(parts, d.Name)
		} else {
			parts = append(parts, d.Name+" "+d.Constraint)
		}
	}
	return strings.Join(parts, "; ")
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
