package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/autopatcher/autopatcher/hub"
)

func deployCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "cancel" {
		return deployCancel(ctx, args[1:], stdout, stderr)
	}
	fs, asJSON, mk := clientFlagSet("deploy", stderr)
	ref := fs.String("bundle", "", "bundle to deploy, NAME@VERSION")
	device := fs.String("device", "", "device id")
	reboot := fs.String("reboot", "now", "when the device reboots into the update: now, window (maintenance window) or hub (on: devices reboot ID)")
	window := fs.String("window", "", "with --reboot window: cron \"minute hour day-of-month month day-of-week\" of the window's start (default: the device's own window)")
	windowLen := fs.Duration("window-length", 0, "with --window: the window's length, e.g. 2h")
	wait := fs.Duration("wait", 0, "wait up to this long for the deployment to finish (or to wait for: devices reboot ID), printing each step (0: do not wait)")
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
	req := hub.DeployRequest{Bundle: name, Version: version, Device: *device, Reboot: *reboot, Window: *window, WindowLength: int64(windowLen.Seconds())}
	if *windowLen > 0 && req.WindowLength == 0 {
		return fmt.Errorf("deploy: --window-length %s: want at least 1s", *windowLen)
	}
	if _, err := req.Policy(); err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	body, _ := json.Marshal(req)
	var dep hub.Deployment
	if err := c.do(ctx, "POST", "/api/v1/deployments", bytes.NewReader(body), 0, &dep); err != nil {
		return err
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "deployment %d: %s@%s to %s: %s (reboot %s)\n", dep.ID, dep.Bundle, dep.Version, dep.Device, dep.State, req.Reboot)
	}
	if *wait > 0 {
		ctx, cancel := context.WithTimeout(ctx, *wait)
		defer cancel()
		shown := len(dep.Steps)
		for !hub.Final(dep.State) && !hub.AwaitingReboot(dep.State) {
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
		if hub.AwaitingReboot(dep.State) {
			if !*asJSON {
				hint := "reboot with"
				if dep.State == hub.DeployWaitingWindow {
					hint = "the device reboots into it in its maintenance window, or now with"
				}
				fmt.Fprintf(stdout, "deployment %d: %s: the update is installed; %s `autopatch-hub devices reboot %s`\n", dep.ID, dep.State, hint, dep.Device)
			}
		} else if !*asJSON && dep.State != hub.DeploySucceeded {
			return fmt.Errorf("deploy: deployment %d ended %s", dep.ID, dep.State)
		}
	}
	if *asJSON {
		return printJSON(stdout, dep)
	}
	return nil
}

// deployCancel cancels a deployment: the device abandons it, the offer is withdrawn.
func deployCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, asJSON, mk := clientFlagSet("deploy cancel", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("deploy cancel: want one DEPLOYMENT-ID")
	}
	id, err := strconv.ParseInt(fs.Arg(0), 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("deploy cancel: deployment id %q: want a positive number", fs.Arg(0))
	}
	c, err := mk()
	if err != nil {
		return err
	}
	var dep hub.Deployment
	if err := c.do(ctx, "POST", fmt.Sprintf("/api/v1/deployments/%d/cancel", id), nil, 0, &dep); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, dep)
	}
	fmt.Fprintf(stdout, "deployment %d: %s@%s to %s: %s\n", dep.ID, dep.Bundle, dep.Version, dep.Device, dep.State)
	return nil
}

func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, asJSON, mk := clientFlagSet("audit", stderr)
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
