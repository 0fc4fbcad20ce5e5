package dashboard

import (
	"net/http"
	"net/url"
	"path"
	"strings"
)

// CSRF, in two layers:
//
//   - every unsafe request first passes http.CrossOriginProtection (routes
//     in dashboard.go), which refuses what the browser says came from
//     another origin (Sec-Fetch-Site, Origin); that also covers the
//     sign-in form, which has no session yet;
//   - every unsafe request of a session must carry the session's own
//     random token, in the form field "csrf" (forms) or the header
//     X-CSRF-Token (scripts); check compares it in constant time. The
//     token lives only in the pages rendered for that session, so another
//     site can neither read nor guess it. An upload carries it as the
//     body's first part and the terminal as its first message: those
//     handlers check it themselves (route.ownCSRF).

// csrfField and csrfHeader carry the token.
const (
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
)

// maxForm bounds a form's body (uploads are streamed, not forms).
const maxForm = 64 << 10

// csrfToken reads the token a request carries. It parses a form body (up
// to maxForm) first, so handlers find their fields in r.PostForm whichever
// way the token came.
func csrfToken(r *http.Request) string {
	if r.Body != nil && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		r.Body = http.MaxBytesReader(nil, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			return ""
		}
	}
	if t := r.Header.Get(csrfHeader); t != "" {
		return t
	}
	if r.PostForm == nil {
		return ""
	}
	return r.PostForm.Get(csrfField)
}

// localPath returns next if it is a path of this dashboard (so a redirect
// can never leave it), else def.
func localPath(next, def string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return def
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(path.Clean(u.Path)+"/", "/ui/") {
		return def
	}
	return next
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
