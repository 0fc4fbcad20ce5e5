package tun

import (
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// holder starts a process in a new network namespace and returns the
// namespace's path; the process is killed when the test ends.
func holder(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
}

func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "ip"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestCreateConfiguresAndCloseRemoves(t *testing.T) {
	ns := holder(t)
	d, err := Create(ns, Config{Name: "eth0", MTU: 1500,
		Addr: netip.MustParsePrefix("100.64.253.2/30"), Gateway: netip.MustParseAddr("100.64.253.1")})
	if err != nil {
		t.Fatal(err)
	}
	link := ipIn(t, ns, "-o", "link", "show", "eth0")
	if !strings.Contains(link, "mtu 1500") || !strings.Contains(link, "UP") {
		t.Errorf("link: %s", link)
	}
	if a := ipIn(t, ns, "-o", "addr", "show", "eth0"); !strings.Contains(a, "inet 100.64.253.2/30") || strings.Contains(a, "inet6") {
		t.Errorf("addr: %s", a)
	}
	if r := ipIn(t, ns, "route", "show", "default"); !strings.Contains(r, "default via 100.64.253.1 dev eth0") {
		t.Errorf("route: %s", r)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if l := ipIn(t, ns, "-o", "link"); strings.Contains(l, "eth0") {
		t.Errorf("eth0 still there after Close: %s", l)
	}
}

// TestNameTaken: root in the sandbox made an "eth0" of its own first.
func TestNameTaken(t *testing.T) {
	ns := holder(t)
	ipIn(t, ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth9")
	d, err := Create(ns, Config{Name: "eth0", MTU: 1500,
		Addr: netip.MustParsePrefix("100.64.253.2/30"), Gateway: netip.MustParseAddr("100.64.253.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name == "eth0" || !strings.HasPrefix(d.Name, "eth") {
		t.Fatalf("name %q", d.Name)
	}
	if r := ipIn(t, ns, "route", "show", "default"); !strings.Contains(r, "dev "+d.Name) {
		t.Errorf("route: %s", r)
	}
}
