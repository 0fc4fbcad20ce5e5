package dashboard

import (
	"html"
	"html/template"
	"net/url"
	"strings"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// The sandboxes table is written in Go rather than with html/template:
// the template engine spends tens of microseconds a row on reflection,
// and this table has a thousand rows. It is a grid of ARIA table roles
// rather than a <table>: each row lays itself out (a CSS grid of fixed
// columns) and rows off the screen are skipped by the browser until
// scrolled to (content-visibility), which a <table> cannot do. Every value goes through esc (text
// and double-quoted attributes) and, in a URL, url.PathEscape first.
// TestSandboxRowMatchesTemplate and FuzzSandboxRow check that it says what
// the template (templates/fragments.html, "sandbox-row-template") says.

// esc escapes s for HTML text or a double-quoted attribute value.
func esc(s string) string { return html.EscapeString(s) }

// sandboxRow renders one row of the sandboxes table.
func sandboxRow(r sbRow) template.HTML {
	var b strings.Builder
	writeSandboxRow(&b, r)
	return template.HTML(b.String()) // every value in it escaped by writeSandboxRow
}

// sandboxRows renders the rows of a page.
func sandboxRows(rows []sbRow) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * 700)
	for _, r := range rows {
		writeSandboxRow(&b, r)
		b.WriteByte('\n')
	}
	return template.HTML(b.String()) // every value in it escaped by writeSandboxRow
}

func writeSandboxRow(b *strings.Builder, r sbRow) {
	sb := r.SB
	id := esc(sb.ID)
	st := esc(string(sb.Status))
	w := b.WriteString
	w(`<div role="row" class="gr" id="sb-`)
	w(id)
	w(`"><span role="rowheader"><a href="/ui/sandboxes/`)
	w(esc(url.PathEscape(sb.ID)))
	w(`" class="mono">`)
	w(id)
	w(`</a></span><span role="cell"><span class="status s-`)
	w(st)
	w(`">`)
	w(st)
	w(`</span></span><span role="cell">`)
	w(esc(sb.Template))
	w(`</span><span role="cell">`)
	w(esc(sb.Pool))
	w(`</span><span role="cell" class="opt meta">`)
	w(esc(metaString(sb.Metadata)))
	w(`</span><span role="cell" class="opt">`)
	w(esc(sb.NodeName))
	w(`</span><span role="cell" class="opt">`)
	w(minute(sb.CreatedAt))
	w(`</span>`)
	writeTimeoutCell(b, sb)
	w(`<span role="cell" class="acts">`)
	if sb.NodeName == r.Here || r.Here == "" {
		// The row's header (its id) names what a button acts on; app.js
		// asks before a delete.
		switch sb.Status {
		case sandbox.StatusRunning:
			w(`<button name="pause" value="` + id + `">Pause</button>`)
		case sandbox.StatusPaused:
			w(`<button name="resume" value="` + id + `">Resume</button>`)
		}
		w(`<button name="delete" value="` + id + `" class="danger">Delete</button>`)
	} else {
		w(`on ` + esc(sb.NodeName))
	}
	w(`</span></div>`)
}

// writeTimeoutCell says how long a sandbox has before it times out; a
// running one's cell carries the deadline, which the page counts down.
func writeTimeoutCell(b *strings.Builder, sb sandbox.Sandbox) {
	switch {
	case sb.Status == sandbox.StatusPaused && sb.TimeoutLeft != nil:
		b.WriteString(`<span role="cell">` + humanSeconds(*sb.TimeoutLeft) + ` on resume</span>`)
	case sb.Status == sandbox.StatusPaused:
		b.WriteString(`<span role="cell">none</span>`)
	case sb.TimesOutAt != nil:
		b.WriteString(`<span role="cell" data-deadline="` + deadline(sb.TimesOutAt) + `">` + humanSeconds(timeUntil(sb.TimesOutAt)) + `</span>`)
	case sb.Timeout > 0:
		b.WriteString(`<span role="cell">while in use</span>`)
	default:
		b.WriteString(`<span role="cell">none</span>`)
	}
}
