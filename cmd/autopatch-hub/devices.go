package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/autopatcher/autopatcher/hub"
)

func devicesCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("devices: want list, show, accept, reject, reboot or report")
	}
	sub, args := args[0], args[1:]
	fs, asJSON, mk := clientFlagSet("devices "+sub, stderr)
	filter := fs.String("filter", "", "device filter, e.g. status=pending,hardware=rpi4,online=true")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := mk()
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		if fs.NArg() != 0 {
			return fmt.Errorf("devices list: unexpected argument %q", fs.Arg(0))
		}
		if _, err := hub.ParseFilter(*filter); err != nil {
			return err
		}
		var ds []hub.Device
		if err := c.do(ctx, "GET", "/api/v1/devices?filter="+url.QueryEscape(*filter), nil, 0, &ds); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, ds)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATUS\tHARDWARE\tONLINE\tBOOTED\tLAST RESULT\tLAST SEEN")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\n", d.ID, d.Status, d.Hardware, d.Online, d.Inventory.Booted, d.LastResult, seen(d.LastSeen))
		}
		return tw.Flush()
	case "show":
		if fs.NArg() != 1 {
			return fmt.Errorf("devices show: want one ID")
		}
		var d hub.DeviceDetail
		if err := c.do(ctx, "GET", "/api/v1/devices/"+url.PathEscape(fs.Arg(0)), nil, 0, &d); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, d)
		}
		fmt.Fprintf(stdout, "device:    %s\nstatus:    %s\nhardware:  %s\nonline:    %v\nlast seen: %s\nagent:     %s\nbooted:    %s\ntrial:     %s\nlast:      %s\n",
			d.ID, d.Status, d.Hardware, d.Online, seen(d.LastSeen), d.Inventory.Agent, d.Inventory.Booted, d.Inventory.Trial, d.LastResult)
		for _, k := range sortedKeys(d.Inventory.Slots) {
			fmt.Fprintf(stdout, "slot:      %s %s\n", k, d.Inventory.Slots[k])
		}
		for _, k := range sortedKeys(d.Inventory.Components) {
			fmt.Fprintf(stdout, "component: %s %s\n", k, d.Inventory.Components[k])
		}
		for _, dep := range d.Deployments {
			fmt.Fprintf(stdout, "deployment: %d %s@%s %s\n", dep.ID, dep.Bundle, dep.Version, dep.State)
			if hub.AwaitingReboot(dep.State) {
				hint := "waits for"
				if dep.State == hub.DeployWaitingWindow {
					hint = "reboots in its maintenance window, or now with"
				}
				fmt.Fprintf(stdout, "            installed; %s `autopatch-hub devices reboot %s`\n", hint, d.ID)
			}
		}
		return nil
	case "reboot", "report":
		if fs.NArg() != 1 {
			return fmt.Errorf("devices %s: want one ID", sub)
		}
		var res hub.CommandResult
		if err := c.do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(fs.Arg(0))+"/"+sub, nil, 0, &res); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, res)
		}
		fmt.Fprintf(stdout, "%s: %s sent (%s)", res.Device, res.Op, res.ID)
		if res.Deployment != 0 {
			fmt.Fprintf(stdout, "; deployment %d is %s", res.Deployment, res.State)
		}
		if !res.Online {
			fmt.Fprint(stdout, "; the device is offline")
		}
		fmt.Fprintln(stdout)
		if sub == "reboot" && !hub.AwaitingReboot(res.State) {
			fmt.Fprintln(stdout, "note: no deployment waits for a reboot; a device with no installed update waiting ignores the command")
		}
		return nil
	case "accept", "reject":
		if fs.NArg() != 1 {
			return fmt.Errorf("devices %s: want one ID", sub)
		}
		var d hub.Device
		if err := c.do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(fs.Arg(0))+"/"+sub, nil, 0, &d); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s\n", d.ID, d.Status)
		return nil
	}
	return fmt.Errorf("devices: unknown subcommand %q", sub)
}

func seen(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format(time.RFC3339)
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
