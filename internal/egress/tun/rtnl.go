package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// rtnl sends the few rtnetlink requests Create needs. It is deliberately
// tiny: one request at a time, each acknowledged before the next.
type rtnl struct {
	fd  int
	seq uint32
}

const in6AddrGenModeNone = 1 // IN6_ADDR_GEN_MODE_NONE, linux/if_link.h

func (n *rtnl) setAddrGenModeNone(idx int) error {
	inner := attr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{in6AddrGenModeNone})
	af := attr(unix.AF_INET6, inner)
	msg := ifinfomsg(idx, 0, 0)
	msg = append(msg, attr(unix.IFLA_AF_SPEC, af)...)
	return n.do(unix.RTM_NEWLINK, 0, msg)
}

func (n *rtnl) setLinkUp(idx, mtu int) error {
	msg := ifinfomsg(idx, unix.IFF_UP, unix.IFF_UP)
	msg = append(msg, attr(unix.IFLA_MTU, u32(uint32(mtu)))...)
	return n.do(unix.RTM_NEWLINK, 0, msg)
}

func (n *rtnl) addAddr(idx int, p netip.Prefix) error {
	a := p.Addr().As4()
	msg := []byte{unix.AF_INET, byte(p.Bits()), 0, unix.RT_SCOPE_UNIVERSE}
	msg = append(msg, u32(uint32(idx))...)
	msg = append(msg, attr(unix.IFA_LOCAL, a[:])...)
	msg = append(msg, attr(unix.IFA_ADDRESS, a[:])...)
	return n.do(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

func (n *rtnl) addDefaultRoute(idx int, gw netip.Addr) error {
	g := gw.As4()
	msg := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_STATIC,
		unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	msg = append(msg, attr(unix.RTA_GATEWAY, g[:])...)
	msg = append(msg, attr(unix.RTA_OIF, u32(uint32(idx)))...)
	return n.do(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

// do sends one request and waits for its acknowledgement.
func (n *rtnl) do(typ uint16, flags uint16, body []byte) error {
	n.seq++
	hdr := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne := binary.NativeEndian
	ne.PutUint32(hdr[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(hdr[4:], typ)
	ne.PutUint16(hdr[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(hdr[8:], n.seq)
	msg := append(hdr, body...)
	if err := unix.Sendto(n.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		m, _, err := unix.Recvfrom(n.fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:m])
		if err != nil {
			return err
		}
		for _, r := range msgs {
			if r.Header.Seq != n.seq || r.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(r.Data) < 4 {
				return fmt.Errorf("short netlink error message")
			}
			if code := int32(ne.Uint32(r.Data)); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
}

func ifinfomsg(idx int, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(idx))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

// attr encodes one rtattr, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], data)
	return b
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}
