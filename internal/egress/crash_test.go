package egress

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// helperEnv makes the test binary an attach helper: it attaches a link
// to the namespace the variable names, says "ready", and waits to be
// killed, standing in for a server that crashes.
const helperEnv = "SANDPOOL_EGRESS_TEST_ATTACH"

func attachHelper() int {
	e, err := New(Config{Resolvers: []netip.AddrPort{netip.AddrPortFrom(upstreamDNS, 53)}, HostsFile: "-"})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	if _, err := e.Attach(context.Background(), Sandbox{ID: "crash", NetNS: os.Getenv(helperEnv)}, mustPolicy("open")); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
	return 0
}

// TestServerCrashLeavesNothing: a server killed with its link attached
// leaves no interface in the sandbox and nothing on the host, and a new
// server attaches to the same sandbox.
func TestServerCrashLeavesNothing(t *testing.T) {
	getWorld(t)
	sb := newSandboxNS(t, true)
	links := hostLinks(t)
	routes, _ := exec.Command("ip", "route").CombinedOutput()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+sb.path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q", line)
	}
	if o, _ := sb.run("ip", "-o", "link"); !strings.Contains(o, "eth0") {
		t.Fatalf("no interface while the helper runs:\n%s", o)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	// The kernel removes the interface as it closes the dead process's
	// descriptors.
	waitFor(t, "interface gone", func() bool {
		o, _ := sb.run("ip", "-o", "link")
		return !strings.Contains(o, "eth0")
	})
	if got := hostLinks(t); got != links {
		t.Errorf("host interfaces changed:\n%s\nwas\n%s", got, links)
	}
	if got, _ := exec.Command("ip", "route").CombinedOutput(); string(got) != string(routes) {
		t.Errorf("host routes changed:\n%s\nwas\n%s", got, routes)
	}
	e, _ := newEngine(t)
	l, err := e.Attach(context.Background(), Sandbox{ID: "after-crash", NetNS: sb.path}, mustPolicy("open"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	echo(t, sb, "203.0.113.20:7000")
}
