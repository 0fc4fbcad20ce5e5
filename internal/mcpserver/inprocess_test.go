package mcpserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func inProcessClient(h http.Handler) *http.Client { return &http.Client{Transport: inProcess{h}} }

func TestInProcessRequestAndAnswer(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != "PUT" || r.URL.Path != "/v1/x" || r.URL.Query().Get("q") != "1" || r.RequestURI != "/v1/x?q=1" ||
			r.Header.Get("Authorization") != "Bearer k" || string(body) != "payload" {
			http.Error(w, "bad request seen: "+r.Method+" "+r.RequestURI, http.StatusTeapot)
			return
		}
		w.Header().Set("X-Answer", "yes")
		w.WriteHeader(http.StatusCreated)
		w.Header().Set("X-Too-Late", "ignored")
		io.WriteString(w, "made")
	})
	req, _ := http.NewRequest("PUT", "http://sandpool.in-process/v1/x?q=1", strings.NewReader("payload"))
	req.Header.Set("Authorization", "Bearer k")
	resp, err := inProcessClient(h).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Answer") != "yes" || resp.Header.Get("X-Too-Late") != "" || string(body) != "made" {
		t.Fatalf("got %s %v %q", resp.Status, resp.Header, body)
	}
}

// A streamed answer arrives as it is written, not when the handler ends.
func TestInProcessStreams(t *testing.T) {
	next := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
		<-next
		io.WriteString(w, "second\n")
	})
	resp, err := inProcessClient(h).Get("http://sandpool.in-process/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "first\n" || err != nil {
		t.Fatalf("first line: %q %v", line, err)
	}
	close(next)
	if rest, err := io.ReadAll(br); string(rest) != "second\n" || err != nil {
		t.Fatalf("rest: %q %v", rest, err)
	}
}

// Closing the body cancels the handler's request, and waits for it.
func TestInProcessCloseCancels(t *testing.T) {
	var handlerErr error
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		<-r.Context().Done()
		handlerErr = r.Context().Err()
	})
	resp, err := inProcessClient(h).Get("http://sandpool.in-process/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !errors.Is(handlerErr, context.Canceled) { // written before Close returned
		t.Fatalf("the handler saw %v", handlerErr)
	}
}

func TestInProcessCancelBeforeAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel() // the caller gives up before any answer
		<-r.Context().Done()
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://sandpool.in-process/", nil)
	if _, err := inProcessClient(h).Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// A panic ends the answer, not the process.
func TestInProcessPanic(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
	resp, err := inProcessClient(h).Get("http://sandpool.in-process/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); resp.StatusCode != http.StatusInternalServerError || err == nil {
		t.Fatalf("got %s, body error %v", resp.Status, err)
	}
}
