package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// inProcess is an http.RoundTripper that serves each request with an
// http.Handler in this process: no socket and no network hop, while the
// request still goes through everything the handler does (authentication,
// tenancy, error mapping). Bodies stream both ways through pipes, so a
// streamed exec arrives event by event.
type inProcess struct{ h http.Handler }

var _ http.RoundTripper = inProcess{}

// errBodyClosed is what a handler's writes get once the caller has closed
// the response body.
var errBodyClosed = errors.New("in-process response body closed")

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	sreq := req.Clone(ctx) // the handler's view, as a server would build it
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "in-process"
	sreq.Host = req.URL.Host
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, body: pw, ready: make(chan struct{})}
	done := make(chan struct{})
	go func() { // owned by the response body: Close waits for it
		defer func() {
			// As net/http's server does, a panic ends this response, not
			// the process (httputil.ReverseProxy aborts a broken stream
			// with http.ErrAbortHandler).
			if p := recover(); p != nil {
				w.WriteHeader(http.StatusInternalServerError) // if nothing was sent yet
				pw.CloseWithError(fmt.Errorf("in-process handler: %v", p))
			} else {
				w.WriteHeader(http.StatusOK) // a handler that wrote nothing answered 200
				_ = pw.Close()               // the reader sees EOF
			}
			_ = sreq.Body.Close() // RoundTrip must close the request body
			close(done)
		}()
		t.h.ServeHTTP(w, sreq)
	}()
	select {
	case <-w.ready:
	case <-ctx.Done():
		pr.CloseWithError(ctx.Err())
		cancel()
		<-done
		return nil, ctx.Err()
	}
	resp := &http.Response{
		Status:        strconv.Itoa(w.code) + " " + http.StatusText(w.code),
		StatusCode:    w.code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &pipeBody{r: pr, cancel: cancel, done: done},
		ContentLength: -1,
		Request:       req,
	}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	}
	return resp, nil
}

// pipeResponse is the handler's http.ResponseWriter: the status and
// header go to RoundTrip once, the body into a pipe.
type pipeResponse struct {
	header http.Header
	body   *io.PipeWriter
	once   sync.Once
	ready  chan struct{} // closed when code and sent are set
	code   int
	sent   http.Header // the header as it was when the status was written
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) WriteHeader(code int) {
	w.once.Do(func() {
		w.code, w.sent = code, w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// Flush does nothing: the pipe has no buffer, every write is read as it
// is made. It lets http.ResponseController.Flush succeed.
func (w *pipeResponse) Flush() {}

// pipeBody is the response body: closing it cancels the handler's
// request and waits for the handler to return.
type pipeBody struct {
	r      *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
}

func (b *pipeBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *pipeBody) Close() error {
	b.r.CloseWithError(errBodyClosed)
	b.cancel()
	<-b.done
	return nil
}
