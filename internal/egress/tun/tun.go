// Package tun makes a TUN device inside another network namespace and
// configures it there, while the descriptor stays with the caller.
//
// The device is not persistent: it exists only while its descriptor is
// open, so when the process holding it exits (or crashes) the kernel
// removes the interface. Nothing is created in the caller's own network
// namespace.
package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Config describes the device to make.
type Config struct {
	// Name of the interface in the namespace, e.g. "eth0".
	Name string
	// MTU of the interface.
	MTU int
	// Addr is the address (and prefix) the namespace side gets.
	Addr netip.Prefix
	// Gateway becomes the namespace's IPv4 default route.
	Gateway netip.Addr
}

// Device is a TUN device living in another network namespace.
type Device struct {
	// FD reads and writes IP packets (no packet information header). The
	// caller closes it with Close; closing removes the interface.
	FD    int
	Name  string
	Index int
}

// Close closes the descriptor, which removes the interface.
func (d *Device) Close() error {
	if d.FD < 0 {
		return nil
	}
	err := unix.Close(d.FD)
	d.FD = -1
	return err
}

// Create makes the TUN device in the network namespace at nsPath (for
// example /proc/<pid>/ns/net), gives it cfg's address, MTU and default
// route, and brings it up. It switches one locked OS thread into the
// namespace only for the two calls that must run there (opening the TUN
// and a netlink socket); the rest goes through those descriptors.
func Create(nsPath string, cfg Config) (_ *Device, retErr error) {
	if !cfg.Addr.Addr().Is4() || !cfg.Gateway.Is4() || cfg.MTU < 576 || cfg.Name == "" {
		return nil, errors.New("tun: config needs IPv4 addresses, an MTU of at least 576 and a name")
	}
	tunFD, nlFD, ioFD := -1, -1, -1
	defer func() {
		for _, fd := range []int{nlFD, ioFD} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		if retErr != nil && tunFD >= 0 {
			unix.Close(tunFD)
		}
	}()
	var name string
	err := inNetNS(nsPath, func() error {
		var err error
		if tunFD, name, err = openTUN(cfg.Name); err != nil {
			return err
		}
		if nlFD, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("netlink socket: %w", err)
		}
		if ioFD, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return fmt.Errorf("inet socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(ioFD, unix.SIOCGIFINDEX, ifr); err != nil {
		return nil, fmt.Errorf("tun %s index: %w", name, err)
	}
	idx := int(ifr.Uint32())
	nl := &rtnl{fd: nlFD}
	// No IPv6 link-local address: the sandbox gets no IPv6 at all. Best
	// effort, for a kernel without IPv6 refuses the attribute.
	_ = nl.setAddrGenModeNone(idx)
	if err := nl.setLinkUp(idx, cfg.MTU); err != nil {
		return nil, fmt.Errorf("tun %s up: %w", name, err)
	}
	if err := nl.addAddr(idx, cfg.Addr); err != nil {
		return nil, fmt.Errorf("tun %s address %s: %w", name, cfg.Addr, err)
	}
	if err := nl.addDefaultRoute(idx, cfg.Gateway); err != nil {
		return nil, fmt.Errorf("tun %s default route via %s: %w", name, cfg.Gateway, err)
	}
	return &Device{FD: tunFD, Name: name, Index: idx}, nil
}

// openTUN creates a new TUN device called name, or, if the namespace
// already has an interface of that name (root in the sandbox may make
// one), the first free name of the same stem ("eth0" -> "eth1"). It never
// attaches to an existing device (IFF_TUN_EXCL).
func openTUN(name string) (int, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open /dev/net/tun: %w", err)
	}
	try := func(n string) (string, error) {
		ifr, err := unix.NewIfreq(n)
		if err != nil {
			return "", err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_TUN_EXCL)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return "", err
		}
		return ifr.Name(), nil
	}
	got, err := try(name)
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EEXIST) {
		got, err = try(strings.TrimRight(name, "0123456789") + "%d")
	}
	if err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("create tun %s: %w", name, err)
	}
	return fd, got, nil
}

// inNetNS runs fn on a locked OS thread that has joined the network
// namespace at path, then returns the thread to its own namespace. If the
// thread cannot go back it stays locked, and Go ends it with this
// goroutine rather than reuse it.
func inNetNS(path string, fn func() error) error {
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer unix.Close(target)
	runtime.LockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer unix.Close(self)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("join network namespace %s: %w", path, err)
	}
	ferr := fn()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("return from network namespace %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
