package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/sandpool/sandpool/internal/events"
)

// events streams the tenant's sandbox transitions as server-sent events.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	tenant := who(r).Tenant
	sub := s.svc.Events().Subscribe(256, func(e events.Event) bool { return e.Tenant == tenant })
	defer sub.Close()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, ": sandpool events\n\n")
	if rc.Flush() != nil {
		return
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.drained:
			return
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case e := <-sub.C:
			if n := sub.Dropped(); n > 0 {
				b, _ := json.Marshal(events.Event{Type: "dropped", Count: n, Time: time.Now().UTC()}) // plain data: cannot fail
				fmt.Fprintf(w, "event: dropped\ndata: %s\n\n", b)
			}
			b, err := json.Marshal(e)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, b); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
