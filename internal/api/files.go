package api

import (
	"io"
	"net/http"
	"strconv"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
)

func (s *Server) files(w http.ResponseWriter, r *http.Request) (fsys.Files, bool) {
	fs, err := s.svc.Files(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return nil, false
	}
	return fs, true
}

// queryPath reads ?path=, which must be there.
func (s *Server) queryPath(w http.ResponseWriter, r *http.Request) (string, bool) {
	p := r.URL.Query().Get("path")
	if p == "" {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "the path query parameter is required"))
		return "", false
	}
	if _, err := fsys.CleanPath(p); err != nil {
		s.writeError(w, r, err)
		return "", false
	}
	return p, true
}

// readFile streams a file's bytes; nothing is held in memory.
func (s *Server) readFile(w http.ResponseWriter, r *http.Request) {
	p, ok := s.queryPath(w, r)
	if !ok {
		return
	}
	fs, ok := s.files(w, r)
	if !ok {
		return
	}
	rc, fi, err := fs.Read(r.Context(), p, fsys.Options{User: r.URL.Query().Get("user")})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	w.Header().Set("X-Sandpool-Mode", strconv.FormatUint(uint64(fi.Mode), 8))
	w.WriteHeader(http.StatusOK)
	// A failure mid-way cuts the response short of Content-Length, which
	// the client sees as an error.
	_, _ = io.Copy(w, rc)
}

// writeFile streams the request body into a file.
func (s *Server) writeFile(w http.ResponseWriter, r *http.Request) {
	p, ok := s.queryPath(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var opts fsys.WriteOptions
	if m := q.Get("mode"); m != "" {
		mode, err := strconv.ParseUint(m, 8, 32)
		if err != nil || mode > 0o7777 {
			s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "mode %q: want octal permission bits like 644", m))
			return
		}
		opts.Mode = uint32(mode)
	}
	opts.User = q.Get("user")
	opts.MakeParents, _ = strconv.ParseBool(q.Get("parents")) // absent: false
	if r.ContentLength > s.cfg.MaxUploadBytes {
		s.writeError(w, r, errTooLarge)
		return
	}
	fs, ok := s.files(w, r)
	if !ok {
		return
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	n, err := fs.Write(r.Context(), p, body, opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "size": n})
}

func (s *Server) removeFile(w http.ResponseWriter, r *http.Request) {
	p, ok := s.queryPath(w, r)
	if !ok {
		return
	}
	recursive, _ := strconv.ParseBool(r.URL.Query().Get("recursive")) // absent: false
	fs, ok := s.files(w, r)
	if !ok {
		return
	}
	if err := fs.Remove(r.Context(), p, fsys.RemoveOptions{User: r.URL.Query().Get("user"), Recursive: recursive}); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	p, ok := s.queryPath(w, r)
	if !ok {
		return
	}
	opts := fsys.ListOptions{User: r.URL.Query().Get("user")}
	if d := r.URL.Query().Get("depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 {
			s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "depth %q: want a whole number of at least 1", d))
			return
		}
		opts.Depth = n
	}
	fs, ok := s.files(w, r)
	if !ok {
		return
	}
	list, err := fs.List(r.Context(), p, opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []fsys.Info{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"files": list})
}

func (s *Server) statFile(w http.ResponseWriter, r *http.Request) {
	p, ok := s.queryPath(w, r)
	if !ok {
		return
	}
	fs, ok := s.files(w, r)
	if !ok {
		return
	}
	fi, err := fs.Stat(r.Context(), p, fsys.Options{User: r.URL.Query().Get("user")})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fi)
}

func (s *Server) mkdir(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Path    string `json:"path"`
		Parents bool   `json:"parents"`
		Mode    uint32 `json:"mode"`
		User    string `json:"user"`
	}
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Mode > 0o7777 {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "mode %o out of range", req.Mode))
		return
	}
	fs, ok := s.files(w, r)
	if !ok {
		return
	}
	if err := fs.Mkdir(r.Context(), req.Path, fsys.MkdirOptions{Mode: req.Mode, User: req.User, Parents: req.Parents}); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) rename(w http.ResponseWriter, r *http.Request) {
	var req struct {
		From string `json:"from"`
		To   string `json:"to"`
		User string `json:"user"`
	}
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	fs, ok := s.files(w, r)
	if !ok {
		return
	}
	if err := fs.Rename(r.Context(), req.From, req.To, fsys.Options{User: req.User}); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
