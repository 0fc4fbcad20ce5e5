package e2b

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/sandpool/sandpool/internal/fsys"
)

// maxUpload bounds one uploaded file.
const maxUpload = 64 << 30

// gzipMin is the smallest file sent compressed to a client that accepts
// gzip: below it compression gains nothing.
const gzipMin = 1 << 10

var gzipWriters = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }}

// fileUser resolves the user of a /files request (?username=, default the
// sandbox's) and the path it names for that user.
func (s *Server) fileUser(r *http.Request, p string) (user, string, error) {
	t := targetOf(r.Context())
	name := r.URL.Query().Get("username")
	u, err := s.userFor(r.Context(), t.sb, name, needsHome(p))
	if err != nil {
		return user{}, "", err
	}
	resolved, err := resolvePath(p, u)
	return u, resolved, err
}

// readFiles streams a file out (GET /files?path=&username=), gzip-encoded
// when the client accepts it.
func (s *Server) readFiles(w http.ResponseWriter, r *http.Request) {
	t := targetOf(r.Context())
	u, p, err := s.fileUser(r, r.URL.Query().Get("path"))
	if err != nil {
		s.writeEnvdError(w, r, err)
		return
	}
	fs, err := s.svc.Files(r.Context(), t.sb.Tenant, t.sb.ID)
	if err != nil {
		s.writeEnvdError(w, r, err)
		return
	}
	rc, fi, err := fs.Read(r.Context(), p, fsys.Options{User: u.name})
	if err != nil {
		s.writeEnvdError(w, r, err)
		return
	}
	defer rc.Close()
	ctype := mime.TypeByExtension(path.Ext(p))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": path.Base(p)}))
	if fi.Size >= gzipMin && acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		w.WriteHeader(http.StatusOK)
		gz := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(gz)
		gz.Reset(w)
		if _, err := io.Copy(gz, rc); err == nil {
			_ = gz.Close() // a failure cuts the stream short, which the client sees
		}
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc) // a failure mid-way cuts the response short of Content-Length
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// fileEntry is what an upload answers for each file written.
type fileEntry struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// writeFiles takes files in (POST /files): multipart/form-data, where
// every part named "file" is one, written to ?path= or else to its
// filename (the full path, as the SDKs send it); or the raw body
// (application/octet-stream, gzip-encoded or not) written to ?path=.
// Missing parent directories are made; files belong to the user.
func (s *Server) writeFiles(w http.ResponseWriter, r *http.Request) {
	t := targetOf(r.Context())
	fs, err := s.svc.Files(r.Context(), t.sb.Tenant, t.sb.ID)
	if err != nil {
		s.writeEnvdError(w, r, err)
		return
	}
	ctype, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	qpath, hasPath := r.URL.Query().Get("path"), r.URL.Query().Has("path")
	var out []fileEntry
	write := func(target string, body io.Reader) error {
		u, p, err := s.fileUser(r, target)
		if err != nil {
			return err
		}
		if _, err := fs.Write(r.Context(), p, body, fsys.WriteOptions{User: u.name, MakeParents: true}); err != nil {
			return err
		}
		out = append(out, fileEntry{Path: p, Name: path.Base(p), Type: "file"})
		return nil
	}
	switch ctype {
	case "multipart/form-data":
		err = s.writeParts(r, qpath, hasPath, write)
	case "application/octet-stream", "":
		if !hasPath {
			err = fmt.Errorf("%w: an octet-stream upload needs ?path=", errBadRequest)
			break
		}
		body := io.Reader(http.MaxBytesReader(w, r.Body, maxUpload))
		if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
			gz, gerr := gzip.NewReader(body)
			if gerr != nil {
				err = fmt.Errorf("%w: gzip body: %v", errBadRequest, gerr)
				break
			}
			defer gz.Close()
			body = gz
		} else if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
			err = fmt.Errorf("%w: Content-Encoding %q: want gzip", errBadRequest, enc)
			break
		}
		err = write(qpath, body)
	default:
		err = fmt.Errorf("%w: Content-Type %q: want multipart/form-data or application/octet-stream", errBadRequest, ctype)
	}
	if err != nil {
		s.writeEnvdError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// writeParts writes each "file" part of a multipart upload.
func (s *Server) writeParts(r *http.Request, qpath string, hasPath bool, write func(string, io.Reader) error) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	seen := map[string]bool{}
	n := 0
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: multipart body: %v", errBadRequest, err)
		}
		// The filename is the target path as given, directories and all
		// (Part.FileName would keep only its last element).
		_, params, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
		if params["name"] != "file" {
			part.Close()
			continue
		}
		target := qpath
		if !hasPath {
			target = params["filename"]
		}
		if target == "" {
			return fmt.Errorf("%w: a file part without ?path= or a filename", errBadRequest)
		}
		if seen[target] {
			return fmt.Errorf("%w: %s given twice", errBadRequest, target)
		}
		seen[target] = true
		if err := write(target, io.LimitReader(part, maxUpload)); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%w: no part named \"file\"", errBadRequest)
	}
	return nil
}
