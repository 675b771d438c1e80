package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/autopatcher/autopatcher/hub"
)

func bundleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("bundle: want upload, list, show or delete")
	}
	sub, args := args[0], args[1:]
	fs, asJSON, mk := clientFlagSet("bundle "+sub, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := mk()
	if err != nil {
		return err
	}
	switch sub {
	case "upload":
		if fs.NArg() != 1 {
			return fmt.Errorf("bundle upload: want one FILE.apb")
		}
		return upload(ctx, c, fs.Arg(0), *asJSON, stdout, stderr)
	case "list":
		var bs []hub.BundleRecord
		if err := c.do(ctx, "GET", "/api/v1/bundles", nil, 0, &bs); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, bs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tSECURITY\tSIZE\tUPLOADED\tBY")
		for _, b := range bs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", b.Name, b.Version, b.SecurityVersion, b.Size, b.Created.Format(time.RFC3339), b.UploadedBy)
		}
		return tw.Flush()
	case "show", "delete":
		if fs.NArg() != 1 {
			return fmt.Errorf("bundle %s: want NAME@VERSION", sub)
		}
		name, version, err := splitRef(fs.Arg(0))
		if err != nil {
			return err
		}
		path := "/api/v1/bundles/" + url.PathEscape(name) + "/" + url.PathEscape(version)
		if sub == "delete" {
			if err := c.do(ctx, "DELETE", path, nil, 0, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "deleted %s@%s\n", name, version)
			return nil
		}
		var d hub.BundleDetail
		if err := c.do(ctx, "GET", path, nil, 0, &d); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, d)
		}
		fmt.Fprintf(stdout, "bundle:    %s@%s\nsecurity:  %d\ndigest:    %s\nsize:      %d bytes (%d chunks, %d stored bytes)\nuploaded:  %s by %s\n",
			d.Name, d.Version, d.SecurityVersion, d.Digest, d.Size, d.Chunks, d.StoredBytes, d.Created.Format(time.RFC3339), d.UploadedBy)
		if m := d.Manifest; m != nil {
			fmt.Fprintf(stdout, "severity:  %s\ncompatible: %v\n", m.Severity, m.Compatible)
			for _, comp := range m.Components {
				fmt.Fprintf(stdout, "component: %s %s (%s %s%s) %d bytes, %d chunks\n", comp.Name, comp.Version, comp.Kind, comp.Slot, comp.Path, comp.Size, len(comp.Chunks))
			}
		}
		return nil
	}
	return fmt.Errorf("bundle: unknown subcommand %q", sub)
}

// interactive reports whether w is a terminal and we are not under CI.
func interactive(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && os.Getenv("CI") != "true" && term.IsTerminal(int(f.Fd()))
}

func upload(ctx context.Context, c *client, path string, asJSON bool, stdout, stderr io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("bundle upload: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("bundle upload: %w", err)
	}
	var body io.Reader = f
	if interactive(stderr) {
		bar := progressbar.NewOptions64(st.Size(),
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("uploading"),
			progressbar.OptionShowBytes(true),
			progressbar.OptionClearOnFinish(),
		)
		r := progressbar.NewReader(f, bar)
		body = &r
	}
	var resp hub.UploadResponse
	if err := c.do(ctx, "POST", "/api/v1/bundles", body, st.Size(), &resp); err != nil {
		return fmt.Errorf("bundle upload %s: %w", path, err)
	}
	if asJSON {
		return printJSON(stdout, resp)
	}
	fmt.Fprintf(stdout, "uploaded %s@%s: %d chunks, %d new (%d bytes), %d bytes already stored (deduplicated)\n",
		resp.Bundle.Name, resp.Bundle.Version, resp.Stats.Chunks, resp.Stats.NewChunks, resp.Stats.NewBytes, resp.Stats.Deduped)
	return nil
}
