package egresstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// inNetNSEnv marks a test binary already moved into its own namespace.
const inNetNSEnv = "SANDPOOL_EGRESS_TEST_NETNS"

// Reexec is for TestMain, before m.Run: unless this process already runs
// in a network namespace of its own, it starts the test binary again
// inside a fresh one, with the same arguments, and returns its exit code
// and true (TestMain then exits with that code). In the fresh namespace
// it brings lo up and returns false: the tests run there, and whatever
// they add to the namespace (the world's routes, veth pairs) vanishes
// with the process. It needs root.
func Reexec() (code int, done bool) {
	if os.Getenv(inNetNSEnv) != "" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "egresstest: lo up: %v %s\n", err, out)
			return 1, true
		}
		return 0, false
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), inNetNSEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), true
		}
		fmt.Fprintln(os.Stderr, "egresstest: re-exec in a new network namespace:", err)
		return 1, true
	}
	return 0, true
}

// InNS runs fn on a thread inside the network namespace at path: sockets
// fn creates belong to that namespace.
func InNS(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		return err // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

var (
	sharedOnce sync.Once
	shared     *World
	sharedErr  error
)

// Shared returns the process's world, built behind its own namespace on
// first use (after Reexec); StopShared, at the end of TestMain, closes it.
func Shared(tb testing.TB) *World {
	tb.Helper()
	sharedOnce.Do(func() { shared, sharedErr = Start() })
	if sharedErr != nil {
		tb.Fatalf("fake internet: %v", sharedErr)
	}
	return shared
}

// StopShared closes the world Shared built, if any.
func StopShared() {
	if shared != nil {
		shared.Close()
	}
}
