package mcpserver

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts goroutines (session watchers, in-process handlers):
// none may outlive a test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
