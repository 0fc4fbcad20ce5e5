package dashboard

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// sandboxData is a sandbox's page.
type sandboxData struct {
	Head      sbHead
	History   []events.Event
	Procs     procsData
	Metrics   metricsData
	Files     filesData
	Terminal  bool // the terminal can be opened (a running sandbox on this node)
	EnvNames  []string
	Uploaded  string
	UploadedN string
}

// sbHead is the top of a sandbox's page: status, actions, details (a
// fragment, replaced live).
type sbHead struct {
	SB    sandbox.Sandbox
	CSRF  string
	Here  string
	Local bool // on this node: actions are possible here
}

// procsData is the processes section (a fragment, replaced live).
type procsData struct {
	ID      string
	CSRF    string
	List    []proc.Info
	Problem string // why there is no list
}

// filesData is the file browser.
type filesData struct {
	ID      string
	CSRF    string
	Path    string
	Entries []fsys.Info
	Problem string
}

// unavailable says why a sandbox's processes and files are not shown, or
// "" if they can be.
func (s *Server) unavailable(h sbHead) string {
	switch {
	case !h.Local:
		return "This sandbox lives on node " + h.SB.NodeName + ": its processes and files are shown by that node's dashboard."
	case h.SB.Status == sandbox.StatusPaused:
		return "The sandbox is paused: resume it to see its processes and files."
	case h.SB.Status != sandbox.StatusRunning:
		return "The sandbox is " + string(h.SB.Status) + ": it has no processes or files to show."
	}
	return ""
}

func (s *Server) head(ctx context.Context, sess *session, id string) (sbHead, error) {
	sb, err := s.svc.Get(ctx, sess.tenant, id)
	if err != nil {
		return sbHead{}, err
	}
	return sbHead{SB: sb, CSRF: sess.csrf, Here: s.cfg.Node, Local: s.cfg.Node == "" || sb.NodeName == s.cfg.Node}, nil
}

// problem is an inline message for a section that failed, worded by the
// one error table.
func (s *Server) problem(err error) string {
	status, title := statusFor(err)
	if status == http.StatusInternalServerError {
		s.log.Error("dashboard section failed", "err", err)
		return title + ": the server's log says more."
	}
	return title + ": " + err.Error()
}

func (s *Server) procs(ctx context.Context, sess *session, h sbHead) procsData {
	d := procsData{ID: h.SB.ID, CSRF: sess.csrf}
	if d.Problem = s.unavailable(h); d.Problem != "" {
		return d
	}
	// Looking must not wake a paused sandbox.
	list, err := s.svc.Processes(sandbox.WithoutAutoResume(ctx), sess.tenant, h.SB.ID)
	if err != nil {
		d.Problem = s.problem(err)
		return d
	}
	slices.SortFunc(list, func(a, b proc.Info) int { return b.StartedAt.Compare(a.StartedAt) })
	d.List = list
	return d
}

func (s *Server) files(ctx context.Context, sess *session, h sbHead, path string) filesData {
	d := filesData{ID: h.SB.ID, CSRF: sess.csrf, Path: path}
	if d.Problem = s.unavailable(h); d.Problem != "" {
		return d
	}
	ctx = sandbox.WithoutAutoResume(ctx)
	fs, err := s.svc.Files(ctx, sess.tenant, h.SB.ID)
	if err == nil {
		d.Entries, err = fs.List(ctx, path, fsys.ListOptions{Depth: 1})
	}
	if err != nil {
		d.Problem = s.problem(err)
		return d
	}
	slices.SortFunc(d.Entries, func(a, b fsys.Info) int {
		if (a.Type == "dir") != (b.Type == "dir") {
			if a.Type == "dir" {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return d
}

func (s *Server) sandboxPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	q := r.URL.Query()
	path := q.Get("path")
	if path == "" {
		path = "/home/user"
	}
	clean, err := fsys.CleanPath(path)
	if err != nil {
		return err
	}
	h, err := s.head(r.Context(), sess, id)
	if err != nil {
		return err
	}
	d := sandboxData{Head: h, History: s.history.sandbox(id), Procs: s.procs(r.Context(), sess, h),
		Files: s.files(r.Context(), sess, h, clean), Metrics: s.measure(r.Context(), sess, h, false),
		Uploaded: q.Get("uploaded"), UploadedN: q.Get("bytes")}
	d.Terminal = h.Local && h.SB.Status == sandbox.StatusRunning
	for k := range h.SB.Env {
		d.EnvNames = append(d.EnvNames, k)
	}
	slices.Sort(d.EnvNames)
	if d.Terminal {
		w.Header().Set("Content-Security-Policy", csp("'self' 'unsafe-inline'"))
	}
	live := url.Values{"view": {"sandbox"}, "id": {id}, "path": {clean}}
	s.render(w, r, http.StatusOK, "sandbox", page{Title: "Sandbox " + id, Nav: "sandboxes", Session: sess, Live: live.Encode(), Data: d})
	return nil
}

func (s *Server) killProcess(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	if _, err := s.local(r.Context(), sess, id); err != nil {
		return err
	}
	err := s.svc.Signal(sandbox.WithoutAutoResume(r.Context()), sess.tenant, id, r.PathValue("proc"), syscall.SIGKILL)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		// Gone already, or not this sandbox's: say which, plainly.
		return errdefs.Userf(errdefs.ErrNotFound, "no running process %q in sandbox %s", r.PathValue("proc"), id)
	}
	return back(w, r, "/ui/sandboxes/"+id+"#processes")
}
