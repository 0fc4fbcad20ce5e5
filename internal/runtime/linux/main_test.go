package linux_test

import (
	"os"
	"testing"

	"github.com/sandpool/sandpool/internal/runtime/linux"
)

// TestMain lets the test binary serve as the sandboxes' PID 1.
func TestMain(m *testing.M) {
	if linux.IsInit() {
		linux.Init()
	}
	if dir := os.Getenv(helperEnv); dir != "" {
		runHelper(dir)
	}
	os.Exit(m.Run())
}
