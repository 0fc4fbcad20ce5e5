package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// static holds the dashboard's CSS, JavaScript and vendored libraries
// (static/vendor: xterm.js, copied there by jsdeps/update.sh): everything
// a page loads comes from the binary, so the dashboard works on a network
// without the internet.
//
//go:embed static
var staticFS embed.FS

// assets are the static files with a hash of their content, which their
// URLs carry: a browser may keep them for ever, and a new build's files
// have new URLs.
type assets struct {
	files map[string]asset // by path under static/
}

type asset struct {
	body []byte
	hash string
	mime string
}

func loadAssets() (*assets, error) {
	a := &assets{files: map[string]asset{}}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		typ := mime.TypeByExtension(path.Ext(p))
		if typ == "" {
			typ = "application/octet-stream"
		}
		a.files[strings.TrimPrefix(p, "static/")] = asset{body: b, hash: hex.EncodeToString(sum[:6]), mime: typ}
		return nil
	})
	return a, err
}

// url is the versioned URL of a static file (templates call it as asset).
func (a *assets) url(name string) string {
	f, ok := a.files[name]
	if !ok {
		return "/ui/static/" + name // a missing file shows up as a 404 in the browser
	}
	return "/ui/static/" + name + "?v=" + f.hash
}

func (s *Server) static(w http.ResponseWriter, r *http.Request, _ *session) error {
	f, ok := s.assets.files[r.PathValue("file")]
	if !ok {
		return errNoRoute
	}
	if r.URL.Query().Get("v") == f.hash {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("Content-Type", f.mime)
	w.Header().Set("ETag", `"`+f.hash+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	return nil
}
