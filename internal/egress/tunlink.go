package egress

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sandpool/sandpool/internal/egress/tun"
)

// tunLink is the stack's link endpoint: it reads IP packets from the TUN
// descriptor and writes the stack's packets to it.
//
// gVisor's fdbased endpoint would do, but it never closes the eventfd it
// makes per reader (one descriptor leaked per sandbox), and its Attach(nil)
// waits for the reader while gVisor's Stack.Wait holds the stack lock that
// a packet being delivered may need (a deadlock). This one reads through
// Go's poller, so a read deadline stops it without closing the descriptor.
//
// It is also the sandbox's front door: only IPv4 TCP and UDP get past
// it. ICMP (which the stack would answer for any address), IPv6 and
// anything else is dropped before the stack sees it.
type tunLink struct {
	f   *os.File
	mtu atomic.Uint32

	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher
	running    bool
	stopped    bool
	wg         sync.WaitGroup
}

var _ stack.LinkEndpoint = (*tunLink)(nil)

// newTUNLink takes over dev's descriptor: from now on closeFile closes
// it (and dev.Close does nothing).
func newTUNLink(dev *tun.Device, mtu int) (*tunLink, error) {
	if err := unix.SetNonblock(dev.FD, true); err != nil {
		return nil, err
	}
	l := &tunLink{f: os.NewFile(uintptr(dev.FD), "tun")}
	dev.FD = -1
	l.mtu.Store(uint32(mtu))
	return l, nil
}

// maxPacket is the largest packet a TUN read returns.
const maxPacket = 1 << 16

// readBufs are shared by every link's reader: a buffer is taken only once
// the TUN is readable, so an idle sandbox holds none.
var readBufs = sync.Pool{New: func() any { b := make([]byte, maxPacket); return &b }}

func (l *tunLink) readLoop(d stack.NetworkDispatcher) {
	defer l.wg.Done()
	rc, err := l.f.SyscallConn()
	if err != nil {
		return
	}
	for {
		var (
			buf  *[]byte
			n    int
			rerr error
		)
		// Returns on a packet, a read error, or the deadline Attach(nil)
		// sets (or the file closing).
		if err := rc.Read(func(fd uintptr) bool {
			buf = readBufs.Get().(*[]byte)
			n, rerr = unix.Read(int(fd), *buf)
			if rerr == unix.EAGAIN {
				readBufs.Put(buf)
				return false
			}
			return true
		}); err != nil {
			return
		}
		if rerr != nil || n <= 0 {
			// EBADFD: the interface was deleted from inside the sandbox;
			// nothing more will come.
			readBufs.Put(buf)
			return
		}
		if p := (*buf)[:n]; admit(p) {
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
				Payload: buffer.MakeWithView(buffer.NewViewWithData(p)),
			})
			d.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
			pkt.DecRef()
		}
		readBufs.Put(buf)
	}
}

// admit reports whether a packet from the sandbox may enter the stack:
// IPv4 carrying TCP or UDP, unfragmented (the sandbox's kernel fragments
// nothing it sends over this link; refusing fragments spares the stack
// reassembly buffers a sandbox could fill).
func admit(p []byte) bool {
	if len(p) < header.IPv4MinimumSize || header.IPVersion(p) != header.IPv4Version {
		return false
	}
	if h := header.IPv4(p); h.More() || h.FragmentOffset() != 0 {
		return false
	}
	switch header.IPv4(p).TransportProtocol() {
	case header.TCPProtocolNumber, header.UDPProtocolNumber:
		return true
	}
	return false
}

// Attach records d, or with nil stops the reader and waits for it. The
// reader starts only with start, once the stack's handlers are in place.
// Once stopped it does not start again.
func (l *tunLink) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	if d == nil {
		if l.running && !l.stopped {
			_ = l.f.SetReadDeadline(time.Unix(1, 0))
		}
		l.stopped = true
		l.mu.Unlock()
		l.wg.Wait()
		return
	}
	defer l.mu.Unlock()
	if l.dispatcher == nil {
		l.dispatcher = d
	}
}

// start starts reading packets into the attached dispatcher.
func (l *tunLink) start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dispatcher != nil && !l.stopped && !l.running {
		l.running = true
		l.wg.Add(1)
		go l.readLoop(l.dispatcher)
	}
}

// WritePackets writes each packet to the TUN with one writev.
func (l *tunLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	var werr tcpip.Error
	rc, err := l.f.SyscallConn()
	if err != nil {
		return 0, &tcpip.ErrClosedForSend{}
	}
	for _, pkt := range pkts.AsSlice() {
		iovs := pkt.AsSlices()
		var errno error
		if cerr := rc.Write(func(fd uintptr) bool {
			_, errno = unix.Writev(int(fd), iovs)
			return errno != unix.EAGAIN
		}); cerr != nil {
			werr = &tcpip.ErrClosedForSend{}
			break
		}
		// An error here means the sandbox's queue is full or its
		// interface is gone: like a wire, the packet is lost and TCP
		// retransmits.
		n++
	}
	if n == 0 && werr != nil {
		return 0, werr
	}
	return n, nil
}

func (l *tunLink) IsAttached() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dispatcher != nil && !l.stopped
}

func (l *tunLink) Wait()                                   { l.wg.Wait() }
func (l *tunLink) MTU() uint32                             { return l.mtu.Load() }
func (l *tunLink) SetMTU(mtu uint32)                       { l.mtu.Store(mtu) }
func (l *tunLink) MaxHeaderLength() uint16                 { return 0 }
func (l *tunLink) LinkAddress() tcpip.LinkAddress          { return "" }
func (l *tunLink) SetLinkAddress(tcpip.LinkAddress)        {}
func (l *tunLink) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (l *tunLink) AddHeader(*stack.PacketBuffer)           {}
func (l *tunLink) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *tunLink) Close()                                  {}
func (l *tunLink) SetOnCloseAction(func())                 {}
func (l *tunLink) Capabilities() stack.LinkEndpointCapabilities {
	// Packets come from the sandbox's kernel through memory; a bad
	// checksum could only hurt the sandbox itself.
	return stack.CapabilityRXChecksumOffload
}

// closeFile closes the TUN descriptor (removing the interface). Call it
// after the stack is gone.
func (l *tunLink) closeFile() error { return l.f.Close() }
