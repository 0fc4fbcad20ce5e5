package dashboard

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

//go:embed templates/*.html
var templateFS embed.FS

// templates holds one template set per page (the layout, the shared
// fragments and the page), and the fragments alone for live updates.
type templates struct {
	pages     map[string]*template.Template
	fragments *template.Template
}

// page is what every page template gets.
type page struct {
	Title string
	// Nav is the menu entry to mark current.
	Nav     string
	Session *session
	// Live, if set, is the query of this page's live stream (/ui/live?...).
	Live string
	Data any
}

// Who is the signed-in tenant, for the templates.
func (p page) Who() *who {
	if p.Session == nil {
		return nil
	}
	return &who{Tenant: p.Session.tenant, Admin: p.Session.admin, CSRF: p.Session.csrf}
}

// who is what templates may know of a session: never its id.
type who struct {
	Tenant string
	Admin  bool
	CSRF   string
}

// errorPage is the data of the error page.
type errorPage struct {
	Status  int
	Title   string
	Message string
}

var funcs = template.FuncMap{
	"clock":       clock,
	"minute":      minute,
	"iso":         func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"ago":         ago,
	"bytes":       humanBytes,
	"seconds":     humanSeconds,
	"meta":        metaString,
	"join":        strings.Join,
	"deadline":    deadline,
	"octal":       func(m uint32) string { return fmt.Sprintf("%04o", m) },
	"parent":      parentDir,
	"sentence":    sentence,
	"sandboxRow":  sandboxRow,
	"sandboxRows": sandboxRows,
	"deref":       func(f *float64) float64 { return *f },
	"until":       timeUntil,
	"float":       func(n int) float64 { return float64(n) },
	"add":         func(a, b int) int { return a + b },
	"sub":         func(a, b int) int { return a - b },
	"mul":         func(a int, f float64) float64 { return float64(a) * f },
	"mul64":       func(a int64, f float64) float64 { return float64(a) * f },
	"sub64":       func(a, b int64) int64 { return a - b },
	"crumbs":      crumbs,
	// asset is replaced per Server with the content-hashed URL.
	"asset": func(string) string { return "" },
}

func parseTemplates(assetURL func(string) string) (*templates, error) {
	fm := maps.Clone(funcs)
	fm["asset"] = assetURL
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	shared := []string{"templates/layout.html", "templates/fragments.html"}
	t := &templates{pages: map[string]*template.Template{}}
	for _, n := range names {
		if slices.Contains(shared, n) {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		set, err := template.New(name).Funcs(fm).ParseFS(templateFS, append(shared, n)...)
		if err != nil {
			return nil, fmt.Errorf("dashboard template %s: %w", name, err)
		}
		t.pages[name] = set
	}
	t.fragments, err = template.New("fragments").Funcs(fm).ParseFS(templateFS, "templates/fragments.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard fragments: %w", err)
	}
	return t, nil
}

// render writes a whole page. It is rendered to memory first, so a
// template that fails gives an error page, not half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	if p.Live != "" {
		p.Live += "&since=" + strconv.FormatInt(requestStart(r).UnixNano(), 10)
	}
	set, ok := s.views.pages[name]
	var buf bytes.Buffer
	err := fmt.Errorf("no page template %q", name)
	if ok {
		err = set.ExecuteTemplate(&buf, "layout", p)
	}
	if err != nil {
		s.log.Error("dashboard page failed to render", "page", name, "err", err)
		buf.Reset()
		status = http.StatusInternalServerError
		_ = s.views.pages["error"].ExecuteTemplate(&buf, "layout", page{Title: "Something went wrong", Data: errorPage{
			Status: status, Title: "Something went wrong", Message: "The page could not be rendered; the server's log says more."}})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the browser may be gone; nothing to do
}

// fragment renders one fragment (for live updates).
func (s *Server) fragment(name string, data any) (string, error) {
	var buf bytes.Buffer
	if err := s.views.fragments.ExecuteTemplate(&buf, name, data); err != nil {
		return "", fmt.Errorf("render %s: %w", name, err)
	}
	return buf.String(), nil
}

// sentence starts a message with a capital letter and ends it with a full
// stop, as the page's other sentences.
func sentence(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, "?") && !strings.HasSuffix(s, "!") {
		s += "."
	}
	return s
}

// minute is a time to the minute, for lists.
func minute(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04")
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return humanSeconds(now().Sub(t).Seconds()) + " ago"
}

// humanSeconds says a duration the way people read it: 45s, 3m 20s, 2h 5m.
func humanSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	if d < 0 {
		d = 0
	}
	h, m, sec := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h >= 24:
		return fmt.Sprintf("%dd %dh", h/24, h%24)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, sec)
	}
	return fmt.Sprintf("%ds", sec)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// metaString shows metadata as "k=v k2=v2", sorted.
func metaString(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

// now is the clock of what pages say ("4m left", "2s ago"); tests fix it.
var now = time.Now

// timeUntil is the seconds from now until t.
func timeUntil(t *time.Time) float64 { return t.Sub(now()).Seconds() }

// deadline is a time as RFC 3339 for the page's countdowns, "" for none.
func deadline(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// parentDir is the directory above a sandbox path ("/" for "/").
func parentDir(p string) string {
	p = strings.TrimSuffix(p, "/")
	i := strings.LastIndex(p, "/")
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// crumb is one step of a path's breadcrumbs.
type crumb struct{ Name, Path string }

// crumbs splits a sandbox path into its breadcrumbs: "/", "home", "user".
func crumbs(p string) []crumb {
	out := []crumb{{Name: "/", Path: "/"}}
	acc := ""
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		acc += "/" + part
		out = append(out, crumb{Name: part, Path: acc})
	}
	return out
}
