package agent

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// procIO is how a new process is connected: the descriptors it is given
// (child, closed here once it has them) and the agent's ends.
type procIO struct {
	child      [3]uintptr
	childFiles []*os.File
	// stdin feeds the process; nil when it reads /dev/null.
	stdin *os.File
	// pty is the terminal's master side for a process on a terminal
	// (stdin and the only output then).
	pty         *os.File
	out, errOut *os.File
}

// output is a descriptor the agent reads a process's output from, and the
// frame type that output travels in.
type output struct {
	f   *os.File
	typ byte
}

// newProcIO makes the pipes, or the terminal, for the process req asks for.
func newProcIO(req *request, acc account) (_ *procIO, retErr error) {
	pio := &procIO{}
	defer func() {
		if retErr != nil {
			pio.closeChild()
			pio.closeParent()
		}
	}()
	if req.PTY != nil {
		master, slave, err := openPTY(*req.PTY, acc.UID)
		if err != nil {
			return nil, err
		}
		pio.pty, pio.stdin = master, master
		pio.childFiles = []*os.File{slave}
		pio.child = [3]uintptr{slave.Fd(), slave.Fd(), slave.Fd()}
		return pio, nil
	}
	var stdinR *os.File
	var err error
	// A background process keeps a stdin that attachers can write to,
	// unless it is asked to read nothing.
	if req.Stdin || (req.Background && !req.NoStdin) {
		if stdinR, pio.stdin, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("stdin pipe: %v", err)
		}
	} else if stdinR, err = os.Open(os.DevNull); err != nil {
		return nil, fmt.Errorf("open %s: %v", os.DevNull, err)
	}
	pio.childFiles = append(pio.childFiles, stdinR)
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %v", err)
	}
	pio.out = outR
	pio.childFiles = append(pio.childFiles, outW)
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stderr pipe: %v", err)
	}
	pio.errOut = errR
	pio.childFiles = append(pio.childFiles, errW)
	pio.child = [3]uintptr{stdinR.Fd(), outW.Fd(), errW.Fd()}
	return pio, nil
}

// outputs are what the agent reads the process's output from.
func (pio *procIO) outputs() []output {
	if pio.pty != nil {
		return []output{{pio.pty, frameStdout}}
	}
	return []output{{pio.out, frameStdout}, {pio.errOut, frameStderr}}
}

// closeChild closes the process's ends, once it has them.
func (pio *procIO) closeChild() {
	for _, f := range pio.childFiles {
		f.Close()
	}
	pio.childFiles = nil
}

// closeParent closes the agent's ends (the process never started).
func (pio *procIO) closeParent() {
	for _, f := range []*os.File{pio.stdin, pio.out, pio.errOut} {
		if f != nil {
			f.Close()
		}
	}
}

// openPTY makes a pseudo-terminal of size: its master side (non-blocking,
// so reads can be given deadlines) and its slave side, which belongs to uid
// so that the process can reopen it (/dev/tty).
func openPTY(size termSize, uid int) (master, slave *os.File, retErr error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(mfd), "/dev/ptmx")
	defer func() {
		if retErr != nil {
			master.Close()
		}
	}()
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return nil, nil, fmt.Errorf("unlock terminal: %w", err)
	}
	// TIOCGPTPEER opens the slave from the master itself, without a path
	// that could be swapped.
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		return nil, nil, fmt.Errorf("open terminal: %w", errno)
	}
	slave = os.NewFile(sfd, "/dev/pts")
	if err := setTermSize(master, size); err != nil {
		slave.Close()
		return nil, nil, err
	}
	_ = unix.Fchown(int(sfd), uid, -1) // best effort: the process has the descriptor anyway
	return master, slave, nil
}

// setTermSize sets a terminal's size (the process gets SIGWINCH).
func setTermSize(f *os.File, size termSize) error {
	if size.Rows == 0 || size.Cols == 0 {
		return fmt.Errorf("terminal size %dx%d: rows and columns must be positive", size.Cols, size.Rows)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Rows, Col: size.Cols})
	}); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("set terminal size: %w", ierr)
	}
	return nil
}
