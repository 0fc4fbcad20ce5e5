package egress

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// The tests run as root in a network namespace of their own: TestMain
// starts the test binary again inside a fresh one. That namespace plays
// the host: its routes lead only into the fake internet the tests build
// (see world_test.go), it has no route off the machine, and whatever a
// test adds to it vanishes with the process.
const inNetNSEnv = "SANDPOOL_EGRESS_TEST_NETNS"

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "egress tests need root (network namespaces, TUN devices); skipping")
		os.Exit(0)
	}
	if os.Getenv(helperEnv) != "" {
		os.Exit(attachHelper())
	}
	if os.Getenv(inNetNSEnv) == "" {
		os.Exit(reexecInNetNS())
	}
	if err := exec.Command("ip", "link", "set", "lo", "up").Run(); err != nil {
		fmt.Fprintln(os.Stderr, "lo up:", err)
		os.Exit(1)
	}
	code := m.Run()
	stopWorld()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func reexecInNetNS() int {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), inNetNSEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "re-exec in a new network namespace:", err)
		return 1
	}
	return 0
}
