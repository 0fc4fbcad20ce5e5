package egress

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// nicID is the only NIC of a sandbox's stack.
const nicID tcpip.NICID = 1

// tcpBufSize is the default send and receive buffer of the stack's TCP
// endpoints (the sandbox's side of each connection).
const tcpBufSize = 256 << 10

// newStack makes a user-space IPv4 stack whose one NIC is ep, the
// sandbox's TUN. The NIC owns the gateway address, accepts
// packets for any destination (promiscuous) and answers from any address
// (spoofing): every connection the sandbox makes ends in this stack, as
// if the far host answered. There is no IPv6, no ICMP and no forwarding:
// nothing is routed anywhere; the egress code decides what to relay.
// The TUN link (tunLink) admits only IPv4 TCP and UDP.
func newStack(ep *tunLink, gw netip.Prefix) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	ok := false
	defer func() {
		if !ok {
			s.Destroy()
		}
	}()
	if terr := s.CreateNIC(nicID, ep); terr != nil {
		return nil, fmt.Errorf("egress: create NIC: %s", terr)
	}
	addr := tcpip.ProtocolAddress{
		Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{
			Address:   tcpip.AddrFrom4(gw.Addr().As4()),
			PrefixLen: gw.Bits(),
		},
	}
	if terr := s.AddProtocolAddress(nicID, addr, stack.AddressProperties{}); terr != nil {
		return nil, fmt.Errorf("egress: gateway address: %s", terr)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	if terr := s.SetPromiscuousMode(nicID, true); terr != nil {
		return nil, fmt.Errorf("egress: promiscuous mode: %s", terr)
	}
	if terr := s.SetSpoofing(nicID, true); terr != nil {
		return nil, fmt.Errorf("egress: spoofing: %s", terr)
	}
	sack := tcpip.TCPSACKEnabled(true)
	// The sandbox is microseconds away: small buffers keep full speed and
	// bound what a sandbox that stops reading can make the server hold
	// (at most MaxConns times both buffers).
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: tcpBufSize, Max: 4 * tcpBufSize}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: tcpBufSize, Max: 4 * tcpBufSize}
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &snd, &rcv} {
		if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); terr != nil {
			return nil, fmt.Errorf("egress: tcp option %T: %s", opt, terr)
		}
	}
	ok = true
	return s, nil
}
