// Command sandpool runs untrusted code in isolated Linux sandboxes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sandpool/sandpool/internal/runtime/linux"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if linux.IsInit() {
		linux.Init() // a sandbox's PID 1; never returns
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandpool:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, "usage: sandpool version")
		return nil
	}
	switch args[0] {
	case "version":
		fmt.Fprintln(stdout, "sandpool", version)
		return nil
	}
	return fmt.Errorf("unknown command %q (try sandpool help)", args[0])
}
