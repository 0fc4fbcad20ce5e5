// Package egress gives each sandbox a controlled network path out.
//
// # Mechanism
//
// Attach creates a TUN interface inside the sandbox's network namespace
// (package tun: one locked OS thread joins the namespace just long enough
// to open /dev/net/tun and a netlink socket), gives it the address
// 100.64.253.2/30 and a default route via 100.64.253.1, and keeps the
// descriptor in the server. Behind it runs a user-space TCP/IP stack
// (gVisor's pkg/tcpip), one per sandbox, that owns the gateway address and
// accepts packets for every destination. Every connection the sandbox
// makes therefore ends in sandpool's process, where it is judged and, if
// allowed, relayed by an ordinary host socket:
//
//   - TCP: the verdict by address is taken at the SYN; when a rule needs a
//     name (HTTP and TLS ports, with name rules), the sandbox's handshake
//     is completed and the first bytes read: the TLS ClientHello's SNI or
//     the HTTP request's Host (package sniff; anything unparsable, split
//     or oversized is refused). A name on the allow list passes only if
//     this sandbox's resolver gave the destination address for that very
//     name. Allowed connections are dialed from the host with a control
//     hook that refuses always-blocked addresses right before connect(2),
//     then bytes are copied both ways and counted.
//   - DNS: UDP and TCP to port 53, whatever the address, is answered by
//     sandpool's resolver for that sandbox (package resolver). Names the
//     policy does not permit get NXDOMAIN without anything leaving the
//     host; permitted A queries are forwarded to the host's resolvers (the
//     hosts file first), always-blocked addresses are dropped from the
//     answer (DNS rebinding), and what remains is remembered per sandbox
//     (for the TTL, at least 5 minutes: clients cache answers). AAAA,
//     HTTPS and SVCB get empty answers.
//   - Everything else (other UDP, so QUIC falls back to TCP; ICMP; IPv6;
//     IP fragments) is dropped at the TUN. The sandbox has no IPv6
//     configured.
//
// In open mode, exact deny-list names are also resolved on the host, so a
// connection to such a name's address is refused even without the name
// (by IP, or TLS without SNI).
//
// The policy is enforced outside the sandbox's namespaces: root inside may
// change its addresses, routes and firewall, or delete the interface, and
// reach nothing more. No packet of a sandbox passes through the host's
// kernel routing, netfilter or conntrack; nothing is added to the host's
// network namespace; the host firewall is untouched.
//
// Always blocked, whatever the policy (unless Config.AllowPrivate lists
// the range): private, shared (CGNAT), loopback, link-local (cloud
// metadata), multicast and reserved IPv4 ranges, their IPv6 equivalents
// and IPv4-embedding forms (see policy.Blocked), the host's own addresses,
// and the sandbox link itself. Other sandboxes are unreachable: each has
// its own stack, and none of their addresses is routable from the host.
//
// # Lifetime and crashes
//
// The TUN is not persistent: the kernel removes the interface when its
// descriptor closes, which Link.Close does, and which the kernel does by
// itself if the server dies. Nothing else exists outside the server's
// memory, so after a crash there is nothing to clean up; a restarted
// server simply attaches again to the sandboxes that survived.
//
// # Use
//
//	eng, err := egress.New(egress.Config{Registry: reg, Log: log})
//	pol, err := egress.ParsePolicy("allowlist", []string{"pypi.org", "*.pythonhosted.org"}, nil)
//	link, err := eng.Attach(ctx, egress.Sandbox{ID: id, NetNS: "/proc/1234/ns/net"}, pol)
//	link.SetPolicy(newPol) // new connections and queries
//	st := link.Stats()
//	conn, err := link.DialSandbox(ctx, 8080) // into the sandbox
//	link.Close()
//
// The sandbox's /etc/resolv.conf should say "nameserver 100.64.253.1"
// (Engine.Gateway). The linux runtime wires it in
// (internal/runtime/linux/network.go); docs/architecture.md says how and
// why.
package egress
