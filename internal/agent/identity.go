package agent

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// asUser runs fn with the calling thread's filesystem identity set to acc
// (fsuid, fsgid and supplementary groups), so the kernel checks every path
// fn touches as acc would be checked, and what fn creates belongs to acc.
// The agent's other threads keep their identity: all three calls are made
// as raw per-thread system calls (Go's syscall.Setgroups would change every
// thread). Leaving uid 0 also clears the thread's filesystem capabilities
// (DAC override, chown, fowner), which come back when it is restored.
// For root, fn runs as the agent itself.
func asUser(acc account, fn func() error) error {
	if acc.UID == 0 {
		return fn()
	}
	runtime.LockOSThread()
	if err := setThreadIdentity(acc.UID, acc.GID, acc.Groups); err != nil {
		restored := setThreadIdentity(0, 0, nil) == nil
		if restored {
			runtime.UnlockOSThread()
		} // else: the thread stays locked and dies with this goroutine
		return fmt.Errorf("act as %s: %w", acc.Name, err)
	}
	err := fn()
	if setThreadIdentity(0, 0, nil) == nil {
		runtime.UnlockOSThread()
	}
	return err
}

func setThreadIdentity(uid, gid int, groups []uint32) error {
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(p), 0); errno != 0 {
		return fmt.Errorf("setgroups: %w", errno)
	}
	// setfsuid and setfsgid report the previous id, not errors: read the
	// new one back to know it took.
	_, _, _ = unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
	if got, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0); int(got) != gid {
		return fmt.Errorf("setfsgid %d did not take", gid)
	}
	_, _, _ = unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	if got, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0); int(got) != uid {
		return fmt.Errorf("setfsuid %d did not take", uid)
	}
	return nil
}
