package mcpserver

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// fakeAPI answers the few /v1 calls the session lifecycle makes, in
// memory, so that it can be tested here without root; the e2e tests run
// it against the real server. Keys are "key-<tenant>".
type fakeAPI struct {
	mu        sync.Mutex
	n         int
	sandboxes map[string]string // id -> tenant
	created   int
	deleted   []string
	pings     int
	blocking  chan struct{} // gets a value when a blocking exec starts
	mux       *http.ServeMux
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{sandboxes: map[string]string{}, blocking: make(chan struct{}, 1), mux: http.NewServeMux()}
	f.mux.HandleFunc("GET /v1/templates", f.auth(func(w http.ResponseWriter, r *http.Request, tenant string) {
		writeJSONTest(w, http.StatusOK, map[string]any{"templates": []any{}})
	}))
	f.mux.HandleFunc("POST /v1/sandboxes", f.auth(func(w http.ResponseWriter, r *http.Request, tenant string) {
		f.mu.Lock()
		f.n++
		f.created++
		id := fmt.Sprintf("sb_%d", f.n)
		f.sandboxes[id] = tenant
		f.mu.Unlock()
		writeJSONTest(w, http.StatusCreated, map[string]any{"id": id, "status": "running", "template": "base"})
	}))
	f.mux.HandleFunc("GET /v1/sandboxes/{id}", f.owned(func(w http.ResponseWriter, r *http.Request, id string) {
		writeJSONTest(w, http.StatusOK, map[string]any{"id": id, "status": "running", "template": "base"})
	}))
	f.mux.HandleFunc("DELETE /v1/sandboxes/{id}", f.owned(func(w http.ResponseWriter, r *http.Request, id string) {
		f.mu.Lock()
		delete(f.sandboxes, id)
		f.deleted = append(f.deleted, id)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	f.mux.HandleFunc("POST /v1/sandboxes/{id}/ping", f.owned(func(w http.ResponseWriter, r *http.Request, id string) {
		f.mu.Lock()
		f.pings++
		f.mu.Unlock()
		writeJSONTest(w, http.StatusOK, map[string]any{"id": id, "status": "running"})
	}))
	f.mux.HandleFunc("PUT /v1/sandboxes/{id}/files", f.owned(func(w http.ResponseWriter, r *http.Request, id string) {
		n, _ := io.Copy(io.Discard, r.Body)
		writeJSONTest(w, http.StatusOK, map[string]any{"size": n})
	}))
	f.mux.HandleFunc("DELETE /v1/sandboxes/{id}/files", f.owned(func(w http.ResponseWriter, r *http.Request, id string) {
		w.WriteHeader(http.StatusNoContent)
	}))
	// exec streams "start", the shell line as stdout, and "exit"; the
	// shell "block" waits until the call is cancelled. The program "node"
	// is missing.
	f.mux.HandleFunc("POST /v1/sandboxes/{id}/exec", f.owned(func(w http.ResponseWriter, r *http.Request, id string) {
		var req struct {
			Cmd   []string `json:"cmd"`
			Shell string   `json:"shell"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &req) // the client's own JSON
		if len(req.Cmd) > 0 && req.Cmd[0] == "node" {
			writeJSONTest(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "not_found",
				"message": `exec: "node": executable file not found in $PATH`}})
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		enc.Encode(map[string]any{"type": "start", "process": "p1", "pid": 2})
		http.NewResponseController(w).Flush()
		if req.Shell == "block" {
			f.blocking <- struct{}{}
			<-r.Context().Done()
			return
		}
		enc.Encode(map[string]any{"type": "stdout", "data": req.Shell + "\n"})
		enc.Encode(map[string]any{"type": "exit", "exit_code": 0})
	}))
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) { f.mux.ServeHTTP(w, r) }

func (f *fakeAPI) auth(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenant, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer key-")
		if !ok || tenant == "" {
			writeJSONTest(w, http.StatusUnauthorized, map[string]any{"error": map[string]string{"code": "unauthorized", "message": "unknown or revoked API key"}})
			return
		}
		h(w, r, tenant)
	}
}

// owned serves a sandbox's route to its tenant; others get 404.
func (f *fakeAPI) owned(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return f.auth(func(w http.ResponseWriter, r *http.Request, tenant string) {
		id := r.PathValue("id")
		f.mu.Lock()
		owner := f.sandboxes[id]
		f.mu.Unlock()
		if owner != tenant {
			writeJSONTest(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "not_found", "message": fmt.Sprintf("no sandbox %q", id)}})
			return
		}
		h(w, r, id)
	})
}

func (f *fakeAPI) counts() (created int, deleted []string, pings int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.created, append([]string(nil), f.deleted...), f.pings
}

func writeJSONTest(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
