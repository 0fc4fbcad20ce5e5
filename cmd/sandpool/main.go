// Command sandpool runs untrusted code in isolated Linux sandboxes: `sandpool
// serve` runs the service, the other commands talk to it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sandpool/sandpool/internal/runtime/linux"
)

func main() {
	if linux.IsInit() {
		linux.Init() // a sandbox's PID 1; never returns
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	var ee exitError
	switch {
	case errors.As(err, &ee):
		os.Exit(int(ee))
	case err != nil:
		msg := err.Error()
		if !strings.HasPrefix(msg, "sandpool: ") {
			msg = "sandpool: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

// exitError carries a command's exit code (sandpool exec) to main.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// run is the whole program; tests call it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := rootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
