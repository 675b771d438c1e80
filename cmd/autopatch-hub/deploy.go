package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/autopatcher/autopatcher/hub"
)

func deployCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mk := clientFlags(fs)
	ref := fs.String("bundle", "", "bundle to deploy, NAME@VERSION")
	device := fs.String("device", "", "device id")
	wait := fs.Duration("wait", 0, "wait up to this long for the deployment to finish, printing each step (0: do not wait)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("deploy: unexpected argument %q", fs.Arg(0))
	}
	if *device == "" {
		return fmt.Errorf("deploy: --device is required")
	}
	name, version, err := splitRef(*ref)
	if err != nil {
		return fmt.Errorf("deploy: --bundle: %w", err)
	}
	c, err := mk()
	if err != nil {
		return err
	}
	body, _ := json.Marshal(hub.DeployRequest{Bundle: name, Version: version, Device: *device})
	var dep hub.Deployment
	if err := c.do(ctx, "POST", "/api/v1/deployments", bytes.NewReader(body), 0, &dep); err != nil {
		return err
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "deployment %d: %s@%s to %s: %s\n", dep.ID, dep.Bundle, dep.Version, dep.Device, dep.State)
	}
	if *wait > 0 {
		ctx, cancel := context.WithTimeout(ctx, *wait)
		defer cancel()
		shown := len(dep.Steps)
		for !hub.Final(dep.State) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("deploy: deployment %d still %s: %w", dep.ID, dep.State, ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
			if err := c.do(ctx, "GET", fmt.Sprintf("/api/v1/deployments/%d", dep.ID), nil, 0, &dep); err != nil {
				return err
			}
			for ; shown < len(dep.Steps) && !*asJSON; shown++ {
				st := dep.Steps[shown]
				fmt.Fprintf(stdout, "  %s %s %s\n", st.At.Format(time.RFC3339), st.State, st.Detail)
			}
		}
		if !*asJSON && dep.State != hub.DeploySucceeded {
			return fmt.Errorf("deploy: deployment %d ended %s", dep.ID, dep.State)
		}
	}
	if *asJSON {
		return printJSON(stdout, dep)
	}
	return nil
}

func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mk := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := mk()
	if err != nil {
		return err
	}
	var ar hub.AuditResponse
	if err := c.do(ctx, "GET", "/api/v1/audit", nil, 0, &ar); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, ar)
	}
	for _, e := range ar.Entries {
		fmt.Fprintf(stdout, "%d %s %s %s %s %s\n", e.Seq, e.At.Format(time.RFC3339), e.Actor, e.Action, e.Target, e.Detail)
	}
	if !ar.Verified {
		return fmt.Errorf("audit log does not verify: %s", ar.Problem)
	}
	fmt.Fprintf(stdout, "hash chain verified (%d entries)\n", len(ar.Entries))
	return nil
}
