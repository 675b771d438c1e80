// Command autopatch-hub runs the AutoPatcher fleet server (serve) and talks to a
// running one through its HTTP API (bundle, devices, deploy, audit).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "autopatch-hub:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: autopatch-hub COMMAND [flags]

commands:
  serve                  run the hub (embedded MQTT broker, HTTP API, store)
  bundle upload FILE.apb upload a signed bundle
  bundle list            list bundles
  bundle show NAME@VER   show a bundle and its manifest
  bundle delete NAME@VER delete a bundle
  devices list           list devices [--filter EXPR] [--json]
  devices show ID        show a device, its inventory and deployments
  devices accept ID      accept a pending device
  devices reject ID      reject a device
  devices reboot ID      tell a device to reboot into its installed update now
  devices report ID      ask a device for a fresh inventory report
  deploy                 --bundle NAME@VERSION --device ID [--reboot now|window|hub]
                         [--window CRON --window-length DUR] [--wait DUR]
  deploy cancel DEP-ID   cancel a deployment: the device abandons it
  audit                  print the audit log and whether its hash chain verifies

Client commands take --hub URL (default $AUTOPATCH_HUB or http://127.0.0.1:8080)
and --token (default $AUTOPATCH_TOKEN).
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, stdout, stderr)
	case "bundle", "bundles":
		return bundleCmd(ctx, rest, stdout, stderr)
	case "devices", "device":
		return devicesCmd(ctx, rest, stdout, stderr)
	case "deploy":
		return deployCmd(ctx, rest, stdout, stderr)
	case "audit":
		return auditCmd(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
