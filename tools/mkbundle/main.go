// Command mkbundle creates, signs, inspects and verifies AutoPatcher bundles.
//
//	mkbundle keygen [--alg ed25519|p256] --out NAME
//	mkbundle build -f bundle.yaml -k KEY [-k KEY2] -o OUT.apb
//	mkbundle sign -k KEY [--trust PUB] IN.apb -o OUT.apb
//	mkbundle inspect [--json] FILE.apb
//	mkbundle verify --trust PUB [--trust PUB2] [--threshold N] [--revoked KID] FILE.apb
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkbundle:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  mkbundle keygen [--alg ed25519|p256] --out NAME
  mkbundle build -f bundle.yaml -k KEY [-k KEY2] -o OUT.apb
  mkbundle sign -k KEY [--trust PUB] IN.apb -o OUT.apb
  mkbundle inspect [--json] [--chunks] FILE.apb
  mkbundle verify --trust PUB [--trust PUB2] [--threshold N] [--revoked KID] FILE.apb
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("missing command")
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"keygen":  keygen,
		"build":   build,
		"sign":    sign,
		"inspect": inspect,
		"verify":  verify,
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], stdout, stderr)
}
