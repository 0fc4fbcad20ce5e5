package resolver

import (
	"bufio"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/egress/policy"
)

// hostsFile is a hosts(5) file, read again when it changes.
type hostsFile struct {
	path string

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	size    int64
	byName  map[string][]netip.Addr
}

// recheck is how often the file's modification time is looked at.
const recheck = time.Second

func (h *hostsFile) lookup(name string) []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := time.Now(); now.Sub(h.checked) >= recheck {
		h.checked = now
		h.reload()
	}
	return h.byName[name]
}

// reload rereads the file if it changed. A missing or unreadable file
// means no entries.
func (h *hostsFile) reload() {
	fi, err := os.Stat(h.path)
	if err != nil {
		h.byName, h.mtime, h.size = nil, time.Time{}, 0
		return
	}
	if h.byName != nil && fi.ModTime().Equal(h.mtime) && fi.Size() == h.size {
		return
	}
	f, err := os.Open(h.path)
	if err != nil {
		h.byName = nil
		return
	}
	defer f.Close()
	m := map[string][]netip.Addr{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		ip, err := netip.ParseAddr(fields[0])
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if !ip.Is4() { // the sandbox has no IPv6
			continue
		}
		for _, n := range fields[1:] {
			if name, bad := policy.NormalizeName(n); bad == "" {
				m[name] = append(m[name], ip)
			}
		}
	}
	h.byName, h.mtime, h.size = m, fi.ModTime(), fi.Size()
}
