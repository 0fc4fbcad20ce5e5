// Package httpstatus remembers the status of an HTTP response as it is
// written: the front ends (api, e2b, dashboard) count responses by
// status, and a handler may need to know whether a response has begun.
package httpstatus

import "net/http"

// Recorder wraps a ResponseWriter and records the status it sent: the
// first WriteHeader's, or 200 once a body or a flush went out first.
// Code is 0 while nothing has been sent. Flushing and hijacking (streams,
// WebSocket upgrades) reach the writer beneath.
type Recorder struct {
	http.ResponseWriter
	Code int
}

func (r *Recorder) WriteHeader(code int) {
	if r.Code == 0 {
		r.Code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *Recorder) Write(b []byte) (int, error) {
	if r.Code == 0 {
		r.Code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush is there for handlers that assert http.Flusher (connect-go
// does); a writer that cannot flush delivers at the end.
func (r *Recorder) Flush() {
	if r.Code == 0 {
		r.Code = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the writer beneath.
func (r *Recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Status is the status sent, 200 if the handler sent nothing at all
// (net/http answers 200 then).
func (r *Recorder) Status() int {
	if r.Code == 0 {
		return http.StatusOK
	}
	return r.Code
}
