package egress

import (
	"testing"

	"github.com/sandpool/sandpool/internal/egress/egresstest"
)

// The fake internet these tests talk to is egresstest's, built once per
// test process behind the namespace TestMain moved the process into.
var (
	upstreamDNS = egresstest.UpstreamDNS
	hostVethIP  = egresstest.HostVethIP
	inNS        = egresstest.InNS
)

func getWorld(tb testing.TB) *egresstest.World { return egresstest.Shared(tb) }
