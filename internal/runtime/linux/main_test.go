package linux_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sandpool/sandpool/internal/egress/egresstest"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// TestMain lets the test binary serve as the sandboxes' PID 1 (and as a
// helper process for the reattach tests), moves the tests into a network
// namespace of their own, where the egress tests' fake internet lives
// (egresstest), and checks for leaked goroutines.
func TestMain(m *testing.M) {
	if linux.IsInit() {
		linux.Init()
	}
	if dir := os.Getenv(helperEnv); dir != "" {
		runHelper(dir)
	}
	if dir := os.Getenv(netHelperEnv); dir != "" {
		runNetHelper(dir)
	}
	if code, done := egresstest.Reexec(); done {
		os.Exit(code)
	}
	code := m.Run()
	egresstest.StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(linuxtest.Finish(code))
}
