package dashboard

import (
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
)

// download streams a file of the sandbox to the browser; nothing is held
// in memory.
func (s *Server) download(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	p, err := fsys.CleanPath(r.URL.Query().Get("path"))
	if err != nil {
		return err
	}
	if _, err := s.local(r.Context(), sess, id); err != nil {
		return err
	}
	fs, err := s.svc.Files(r.Context(), sess.tenant, id)
	if err != nil {
		return err
	}
	rc, fi, err := fs.Read(r.Context(), p, fsys.Options{})
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	w.WriteHeader(http.StatusOK)
	// A failure mid-way cuts the download short of its length, which the
	// browser reports as failed.
	_, _ = io.Copy(w, rc)
	return nil
}

// maxField bounds the small fields of the upload form.
const maxField = 4096

// upload streams a file from a form into the sandbox. The form's parts
// come in its order: the CSRF token first (checked before anything else
// is read), then the directory, then the file, which goes straight to the
// sandbox.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	mr, err := r.MultipartReader()
	if err != nil {
		return errBadForm
	}
	field := func(name string) (string, error) {
		part, err := mr.NextPart()
		if err != nil || part.FormName() != name {
			return "", errBadForm
		}
		b, err := io.ReadAll(io.LimitReader(part, maxField))
		return string(b), err
	}
	token, err := field(csrfField)
	if err != nil || !sess.checkCSRF(token) {
		return errCSRF
	}
	dir, err := field("dir")
	if err != nil {
		return err
	}
	if dir, err = fsys.CleanPath(dir); err != nil {
		return err
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "file" {
		return errBadForm
	}
	name := part.FileName() // the base name only (mime/multipart drops any directory)
	if name == "" || name == "." || name == ".." || name == "/" {
		return errdefs.Userf(errdefs.ErrInvalid, "choose a file to upload")
	}
	if _, err := s.local(r.Context(), sess, id); err != nil {
		return err
	}
	fs, err := s.svc.Files(r.Context(), sess.tenant, id)
	if err != nil {
		return err
	}
	n, err := fs.Write(r.Context(), path.Join(dir, name), part, fsys.WriteOptions{})
	if err != nil {
		return err
	}
	q := url.Values{"path": {dir}, "uploaded": {name}, "bytes": {strconv.FormatInt(n, 10)}}
	http.Redirect(w, r, "/ui/sandboxes/"+id+"?"+q.Encode()+"#files", http.StatusSeeOther)
	return nil
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	p, err := fsys.CleanPath(r.PostForm.Get("path"))
	if err != nil {
		return err
	}
	if p == "/" {
		return errdefs.Userf(errdefs.ErrInvalid, "the root cannot be removed")
	}
	if _, err := s.local(r.Context(), sess, id); err != nil {
		return err
	}
	fs, err := s.svc.Files(r.Context(), sess.tenant, id)
	if err != nil {
		return err
	}
	if err := fs.Remove(r.Context(), p, fsys.RemoveOptions{Recursive: r.PostForm.Get("recursive") != ""}); err != nil {
		return err
	}
	q := url.Values{"path": {parentDir(p)}}
	http.Redirect(w, r, "/ui/sandboxes/"+id+"?"+q.Encode()+"#files", http.StatusSeeOther)
	return nil
}
