package egress

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandpool/sandpool/internal/egress/egresstest"
)

// The tests run as root in a network namespace of their own: TestMain
// starts the test binary again inside a fresh one (egresstest.Reexec).
// That namespace plays the host: its routes lead only into the fake
// internet the tests build (package egresstest), it has no route off the
// machine, and whatever a test adds to it vanishes with the process.

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "egress tests need root (network namespaces, TUN devices); skipping")
		os.Exit(0)
	}
	if os.Getenv(helperEnv) != "" {
		os.Exit(attachHelper())
	}
	if code, done := egresstest.Reexec(); done {
		os.Exit(code)
	}
	code := m.Run()
	egresstest.StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}
