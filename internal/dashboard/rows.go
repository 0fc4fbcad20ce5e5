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
// and this table has a thousand rows. Every value goes through esc (text
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
	w(`<tr id="sb-`)
	w(id)
	w(`"><th scope="row"><a href="/ui/sandboxes/`)
	w(esc(url.PathEscape(sb.ID)))
	w(`" class="mono">`)
	w(id)
	w(`</a></th><td><span class="status s-`)
	w(st)
	w(`">`)
	w(st)
	w(`</span></td><td>`)
	w(esc(sb.Template))
	w(`</td><td>`)
	w(esc(sb.Pool))
	w(`</td><td class="opt meta">`)
	w(esc(metaString(sb.Metadata)))
	w(`</td><td class="opt">`)
	w(esc(sb.NodeName))
	w(`</td><td class="opt">`)
	w(clock(sb.CreatedAt))
	w(`</td>`)
	writeTimeoutCell(b, sb)
	w(`<td>`)
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
	w(`</td></tr>`)
}

// writeTimeoutCell says how long a sandbox has before it times out; a
// running one's cell carries the deadline, which the page counts down.
func writeTimeoutCell(b *strings.Builder, sb sandbox.Sandbox) {
	switch {
	case sb.Status == sandbox.StatusPaused && sb.TimeoutLeft != nil:
		b.WriteString(`<td>` + humanSeconds(*sb.TimeoutLeft) + ` when resumed</td>`)
	case sb.Status == sandbox.StatusPaused:
		b.WriteString(`<td>none</td>`)
	case sb.TimesOutAt != nil:
		b.WriteString(`<td data-deadline="` + deadline(sb.TimesOutAt) + `">` + humanSeconds(timeUntil(sb.TimesOutAt)) + `</td>`)
	case sb.Timeout > 0:
		b.WriteString(`<td>while in use</td>`)
	default:
		b.WriteString(`<td>none</td>`)
	}
}
