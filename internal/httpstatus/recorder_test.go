package httpstatus

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRecorder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter)
		code  int // recorded
	}{
		{"nothing", func(w http.ResponseWriter) {}, 0},
		{"header", func(w http.ResponseWriter) { w.WriteHeader(http.StatusTeapot); w.WriteHeader(http.StatusOK) }, http.StatusTeapot},
		{"body first", func(w http.ResponseWriter) { w.Write([]byte("x")); w.WriteHeader(http.StatusNotFound) }, http.StatusOK},
		{"flush first", func(w http.ResponseWriter) { w.(http.Flusher).Flush() }, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			under := httptest.NewRecorder()
			rec := &Recorder{ResponseWriter: under}
			tc.serve(rec)
			if rec.Code != tc.code {
				t.Fatalf("Code = %d, want %d", rec.Code, tc.code)
			}
			want := tc.code
			if want == 0 {
				want = http.StatusOK // what net/http sends then
			}
			if rec.Status() != want {
				t.Fatalf("Status() = %d, want %d", rec.Status(), want)
			}
			if tc.name == "flush first" && !under.Flushed {
				t.Fatal("the flush did not reach the writer beneath")
			}
			if http.NewResponseController(rec).Flush() != nil {
				t.Fatal("ResponseController cannot reach the writer beneath")
			}
		})
	}
}
