package linux_test

import (
	"os"
	"testing"

	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// TestMain lets the test binary serve as the sandboxes' PID 1 and as a
// helper process for the reattach tests; the rest is linuxtest.MainNet:
// the tests run in a network namespace of their own, where the egress
// tests' fake internet lives, and leaked goroutines or cgroups fail them.
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
	linuxtest.MainNet(m)
}
