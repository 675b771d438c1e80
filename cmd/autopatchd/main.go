// Command autopatchd is AutoPatcher's on-device update daemon and its
// command line: run, install, status, mark-good, mark-bad, rollback, reboot.
// The update engine lives in package device; this is only its front door.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "autopatchd:", err)
		os.Exit(1)
	}
}
