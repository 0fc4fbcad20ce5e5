package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/sandbox"
)

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	list, err := s.svc.Templates(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"templates": list})
}

// TemplateRequest is the body of POST /v1/templates: a template from a
// directory on the server (dir), or on another template's files (from),
// with hooks; build runs its setup once now.
type TemplateRequest struct {
	Name string `json:"name"`
	Dir  string `json:"dir,omitempty"`
	From string `json:"from,omitempty"`
	sandbox.Hooks
	Build bool `json:"build,omitempty"`
}

func (s *Server) createTemplate(w http.ResponseWriter, r *http.Request) {
	var req TemplateRequest
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Dir == "" && req.From == "" {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "dir or from is required (or PUT a tar archive to /v1/templates/{name})"))
		return
	}
	s.addTemplate(w, r, sandbox.TemplateRequest{Name: req.Name, Dir: req.Dir, From: req.From, Hooks: req.Hooks, Build: req.Build})
}

// uploadTemplate imports a tar archive of a root filesystem; hooks and
// build come as query parameters.
func (s *Server) uploadTemplate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := sandbox.TemplateRequest{Name: r.PathValue("name"), Tar: http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes),
		Hooks: sandbox.Hooks{Setup: q.Get("setup"), SessionSetup: q.Get("session_setup"), SessionTeardown: q.Get("session_teardown")}}
	if v := q.Get("setup_timeout"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "setup_timeout %q: want seconds", v))
			return
		}
		req.Hooks.SetupTimeout = n
	}
	if mode := q.Get("egress"); mode != "" || q.Has("allow") || q.Has("deny") {
		req.Hooks.Network = &sandbox.Network{Egress: mode, Allow: listParam(q["allow"]), Deny: listParam(q["deny"])}
	}
	req.Build, _ = strconv.ParseBool(q.Get("build")) // absent: false
	s.addTemplate(w, r, req)
}

// addTemplate adds a template. A build asked for with Accept:
// application/x-ndjson streams the setup's output as "output" events and
// ends with "done" (the template) or "error".
func (s *Server) addTemplate(w http.ResponseWriter, r *http.Request, req sandbox.TemplateRequest) {
	if !req.Build || !strings.Contains(r.Header.Get("Accept"), "application/x-ndjson") {
		t, err := s.svc.AddTemplate(r.Context(), req)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, t)
		return
	}
	ev := newEventWriter(w)
	req.Progress = outputWriter{ev, func(data, b64 string) any { return BuildEvent{Type: "output", Data: data, DataBase64: b64} }}
	t, err := s.svc.AddTemplate(r.Context(), req)
	switch {
	case err != nil && !ev.started:
		s.writeError(w, r, err) // failed before any output: a plain error answer
	case err != nil:
		_ = ev.send(BuildEvent{Type: "error", Error: newStreamError(err)}) // best effort: the client may be gone
	default:
		_ = ev.send(BuildEvent{Type: "done", Template: &t}) // likewise
	}
}

// BuildEvent is one line of a streamed template build.
type BuildEvent struct {
	Type string `json:"type"` // output, done, error
	// output
	Data       string `json:"data,omitempty"`
	DataBase64 string `json:"data_base64,omitempty"`
	// done
	Template *sandbox.Template `json:"template,omitempty"`
	// error
	Error *streamError `json:"error,omitempty"`
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.DeleteTemplate(r.Context(), r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listParam reads a list given as repeated and/or comma-separated query
// parameters.
func listParam(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, one := range strings.Split(v, ",") {
			if one = strings.TrimSpace(one); one != "" {
				out = append(out, one)
			}
		}
	}
	return out
}
