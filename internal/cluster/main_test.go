package cluster_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts, through the package or not, has ended.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
