package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/sandpool/sandpool/client"
)

// pullPrinter shows how an image pull goes, layer by layer, and passes
// build output through. On a terminal the layer being fetched counts up
// in place; elsewhere each layer gets a line when it starts and one when
// it is stored.
type pullPrinter struct {
	w   io.Writer
	tty bool

	mu      sync.Mutex
	started map[int]bool
	partial bool // a counting line is on screen, not ended
}

func newPullPrinter(w io.Writer) *pullPrinter {
	p := &pullPrinter{w: w, started: map[int]bool{}}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *pullPrinter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	return p.w.Write(b)
}

func (p *pullPrinter) endLine() {
	if p.partial {
		fmt.Fprintln(p.w)
		p.partial = false
	}
}

// PullProgress implements client.PullReporter.
func (p *pullPrinter) PullProgress(pp client.PullProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := fmt.Sprintf("layer %d/%d %s", pp.Layer, pp.Layers, shortDigest(pp.Digest))
	switch {
	case pp.Cached:
		p.endLine()
		fmt.Fprintf(p.w, "%s: already stored (shared)\n", name)
	case pp.Done:
		if p.tty {
			fmt.Fprintf(p.w, "\r\033[K")
			p.partial = false
		}
		fmt.Fprintf(p.w, "%s: %s pulled\n", name, size(pp.Total))
	case !p.started[pp.Layer]:
		p.started[pp.Layer] = true
		p.endLine()
		if p.tty {
			fmt.Fprintf(p.w, "%s: %s / %s", name, size(pp.Bytes), size(pp.Total))
			p.partial = true
		} else {
			fmt.Fprintf(p.w, "%s: pulling %s\n", name, size(pp.Total))
		}
	case p.tty:
		fmt.Fprintf(p.w, "\r\033[K%s: %s / %s", name, size(pp.Bytes), size(pp.Total))
		p.partial = true
	}
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

// size writes bytes for people: 512 B, 3.2 KiB, 40.0 MiB.
func size(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}
