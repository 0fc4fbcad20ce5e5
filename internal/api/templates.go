package api

import (
	"net/http"
	"net/url"
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
// directory on the server (dir), on another template's files (from), or
// from an image (image, oci_layout or docker_archive), with hooks; build
// runs its setup once now.
type TemplateRequest struct {
	Name string `json:"name"`
	Dir  string `json:"dir,omitempty"`
	From string `json:"from,omitempty"`
	sandbox.Hooks
	// Limits are what its sandboxes get where a create leaves a limit at
	// zero ("gpus": 1).
	Limits *sandbox.Limits `json:"limits,omitempty"`
	Build  bool            `json:"build,omitempty"`
	ImageRequest
}

// ImageRequest says where an image template's image comes from and how
// to fetch it.
type ImageRequest struct {
	// Image is a registry reference; OCILayout and DockerArchive are a
	// directory and a file on the server.
	Image         string `json:"image,omitempty"`
	OCILayout     string `json:"oci_layout,omitempty"`
	DockerArchive string `json:"docker_archive,omitempty"`
	// ImageName picks one image of a layout or an archive holding several.
	ImageName string `json:"image_name,omitempty"`
	Platform  string `json:"platform,omitempty"`
	// Username and Password log in to the registry.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
}

func (i ImageRequest) source() *sandbox.ImageSource {
	if i.Image == "" && i.OCILayout == "" && i.DockerArchive == "" {
		return nil
	}
	return &sandbox.ImageSource{Ref: i.Image, OCILayout: i.OCILayout, DockerArchive: i.DockerArchive, Name: i.ImageName,
		Platform: i.Platform, Username: i.Username, Password: i.Password, Insecure: i.Insecure}
}

func (s *Server) createTemplate(w http.ResponseWriter, r *http.Request) {
	var req TemplateRequest
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	img := req.source()
	if req.Dir == "" && req.From == "" && img == nil {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "dir, from or an image (image, oci_layout, docker_archive) is required (or PUT a tar archive to /v1/templates/{name})"))
		return
	}
	s.addTemplate(w, r, sandbox.TemplateRequest{Name: req.Name, Dir: req.Dir, From: req.From, Image: img, Hooks: req.Hooks,
		Limits: req.Limits, Build: req.Build})
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
	req.Hooks.Network = networkParams(q)
	req.Build, _ = strconv.ParseBool(q.Get("build")) // absent: false
	s.addTemplate(w, r, req)
}

// addTemplate adds a template. A build or an image pull asked for with
// Accept: application/x-ndjson streams the pull's progress as "pull"
// events and the setup's output as "output" events, and ends with "done"
// (the template) or "error".
func (s *Server) addTemplate(w http.ResponseWriter, r *http.Request, req sandbox.TemplateRequest) {
	s.runBuild(w, r, req.Build || req.Image != nil, func(ev *eventWriter) (sandbox.Template, error) {
		if ev != nil {
			req.Progress, req.Pull = buildOutput(ev), pullEvents(ev)
		}
		return s.svc.AddTemplate(r.Context(), req)
	})
}

// runBuild answers a template's add or build: with JSON once done, or,
// when the work has progress to show and the client accepts
// application/x-ndjson, with its progress as events (run is given the
// event writer; nil for a JSON answer).
func (s *Server) runBuild(w http.ResponseWriter, r *http.Request, progress bool, run func(ev *eventWriter) (sandbox.Template, error)) {
	if !progress || !strings.Contains(r.Header.Get("Accept"), "application/x-ndjson") {
		t, err := run(nil)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, t)
		return
	}
	ev := newEventWriter(w)
	t, err := run(ev)
	s.endBuild(w, r, ev, t, err)
}

func buildOutput(ev *eventWriter) outputWriter {
	return outputWriter{ev, func(data, b64 string) any { return BuildEvent{Type: "output", Data: data, DataBase64: b64} }}
}

func pullEvents(ev *eventWriter) func(sandbox.PullProgress) {
	return func(p sandbox.PullProgress) {
		_ = ev.send(BuildEvent{Type: "pull", Pull: &p}) // best effort: a client gone cancels the request
	}
}

// endBuild ends a streamed template add or build.
func (s *Server) endBuild(w http.ResponseWriter, r *http.Request, ev *eventWriter, t sandbox.Template, err error) {
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
	Type string `json:"type"` // pull, output, done, error
	// pull
	Pull *sandbox.PullProgress `json:"pull,omitempty"`
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

// buildTemplate builds a Dockerfile into a template. The body is the
// build context as a tar archive, the Dockerfile one of its files; the
// rest comes as query parameters. With Accept: application/x-ndjson the
// build streams as for POST /v1/templates.
func (s *Server) buildTemplate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := sandbox.BuildRequest{Name: r.PathValue("name"), Context: http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes),
		Dockerfile: q.Get("dockerfile"), Platform: q.Get("platform"),
		Hooks: sandbox.Hooks{Setup: q.Get("setup"), SessionSetup: q.Get("session_setup"), SessionTeardown: q.Get("session_teardown")}}
	for _, kv := range q["build_arg"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "build_arg %q: want NAME=VALUE", kv))
			return
		}
		if req.Args == nil {
			req.Args = map[string]string{}
		}
		req.Args[k] = v
	}
	for name, dst := range map[string]*bool{"no_cache": &req.NoCache, "build": &req.Build} {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "%s %q: want true or false", name, v))
				return
			}
			*dst = b
		}
	}
	if v := q.Get("setup_timeout"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "setup_timeout %q: want seconds", v))
			return
		}
		req.Hooks.SetupTimeout = n
	}
	req.Hooks.Network = networkParams(q)
	s.runBuild(w, r, true, func(ev *eventWriter) (sandbox.Template, error) {
		if ev != nil {
			req.Output, req.Pull = buildOutput(ev), pullEvents(ev)
		}
		return s.svc.BuildTemplate(r.Context(), req)
	})
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

// networkParams reads an egress policy from query parameters egress,
// allow and deny; nil if none is given.
func networkParams(q url.Values) *sandbox.Network {
	mode := q.Get("egress")
	if mode == "" && !q.Has("allow") && !q.Has("deny") {
		return nil
	}
	return &sandbox.Network{Egress: mode, Allow: listParam(q["allow"]), Deny: listParam(q["deny"])}
}
