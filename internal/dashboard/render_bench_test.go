package dashboard

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// BenchmarkSandboxesPage renders the page of 1,000 sandboxes (without
// reading them).
func BenchmarkSandboxesPage(b *testing.B) {
	as, err := loadAssets()
	if err != nil {
		b.Fatal(err)
	}
	views, err := parseTemplates(as.url)
	if err != nil {
		b.Fatal(err)
	}
	var d sandboxesData
	now := time.Now()
	for i := range 1000 {
		t := now.Add(time.Hour)
		d.Rows = append(d.Rows, sbRow{SB: sandbox.Sandbox{ID: fmt.Sprintf("sb_06h27a1h2xrtq9b6xk7qan%04d", i), Status: "running", Template: "base",
			Metadata: map[string]string{"team": "perf", "job": fmt.Sprint(i)}, NodeName: "n1", CreatedAt: now, TimesOutAt: &t, Timeout: 3600},
			Here: "n1"})
	}
	p := page{Title: "Sandboxes", Live: "view=sandboxes", Data: d, Session: &session{tenant: "t", csrf: "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghij"}}
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := views.pages["sandboxes"].ExecuteTemplate(&buf, "layout", p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "bytes")
}
