package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/sandpool/sandpool/internal/fsys"
)

// watchFiles streams changes in a directory as newline-delimited JSON
// events ({"name": "a/b", "op": "create"}), or as server-sent events with
// Accept: text/event-stream. The response starts once the watch is armed;
// it ends when the directory goes, or the client hangs up.
func (s *Server) watchFiles(w http.ResponseWriter, r *http.Request) {
	p, ok := s.queryPath(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	recursive, _ := strconv.ParseBool(q.Get("recursive")) // absent: false
	fs, ok := s.files(w, r)
	if !ok {
		return
	}
	watch, err := fs.Watch(r.Context(), p, fsys.WatchOptions{User: q.Get("user"), Recursive: recursive})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer watch.Close()
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	for {
		e, err := watch.Next()
		if err != nil {
			return // the directory is gone, the client left, or the sandbox stopped
		}
		b, _ := json.Marshal(e) // two strings
		if sse {
			b = append(append([]byte("data: "), b...), '\n')
		}
		if _, err := w.Write(append(b, '\n')); err != nil || rc.Flush() != nil {
			return
		}
	}
}
