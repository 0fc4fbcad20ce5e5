package mcpserver

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

func (t *tools) writeFile(c *call, a writeFileArgs) *mcp.CallToolResult {
	p, data, err := a.data()
	if err != nil {
		return toolError("write_file", err)
	}
	id, err := t.target(c, a.SandboxID)
	if err != nil {
		return toolError("write_file", err)
	}
	n, err := c.ss.c.WriteFile(c.ctx, id, p, bytes.NewReader(data), client.WriteOptions{MakeParents: true})
	if err != nil {
		return t.failed(c, "write_file", id, err)
	}
	return text(fmt.Sprintf("Wrote %d bytes to %s in sandbox %s.", n, p, id),
		map[string]any{"sandbox_id": id, "path": p, "size": n})
}

func (t *tools) readFile(c *call, a readFileArgs) *mcp.CallToolResult {
	p, err := a.check()
	if err != nil {
		return toolError("read_file", err)
	}
	id, err := t.target(c, a.SandboxID)
	if err != nil {
		return toolError("read_file", err)
	}
	rc, err := c.ss.c.ReadFile(c.ctx, id, p)
	if err != nil {
		return t.failed(c, "read_file", id, err)
	}
	defer rc.Close()
	limit := t.s.cfg.MaxReadBytes
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return t.failed(c, "read_file", id, err)
	}
	if int64(len(data)) > limit {
		return toolError("read_file", fmt.Errorf("%s is larger than read_file's limit of %s: read parts of it "+
			"with run_command (head -c, tail, sed -n '1,100p', grep), or make it smaller first", p, size(limit)))
	}
	out := map[string]any{"sandbox_id": id, "path": p, "size": len(data)}
	if a.Encoding == "base64" || !utf8.Valid(data) {
		enc := base64.StdEncoding.EncodeToString(data)
		out["encoding"], out["content"] = "base64", enc
		note := ""
		if a.Encoding != "base64" {
			note = " (it is not UTF-8 text)"
		}
		return text(fmt.Sprintf("%s, %d bytes, as base64%s:\n%s", p, len(data), note, enc), out)
	}
	out["encoding"], out["content"] = "text", string(data)
	return text(string(data), out)
}

// maxListed bounds the entries list_files shows.
const maxListed = 1000

func (t *tools) listFiles(c *call, a listFilesArgs) *mcp.CallToolResult {
	p, err := a.check()
	if err != nil {
		return toolError("list_files", err)
	}
	id, err := t.target(c, a.SandboxID)
	if err != nil {
		return toolError("list_files", err)
	}
	list, err := c.ss.c.ListFiles(c.ctx, id, p)
	if err != nil {
		return t.failed(c, "list_files", id, err)
	}
	type entry struct {
		Name   string `json:"name"`
		Type   string `json:"type"`
		Size   int64  `json:"size"`
		Target string `json:"target,omitempty"`
	}
	entries := make([]entry, 0, min(len(list), maxListed))
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%d entries):\n", p, len(list))
	for i, f := range list {
		if i == maxListed {
			fmt.Fprintf(&b, "... and %d more (narrow it down with run_command and find or ls)\n", len(list)-maxListed)
			break
		}
		entries = append(entries, entry{Name: f.Name, Type: f.Type, Size: f.Size, Target: f.Target})
		name := f.Name
		switch f.Type {
		case "dir":
			name += "/"
		case "symlink":
			name += " -> " + f.Target
		}
		fmt.Fprintf(&b, "%-7s %10d  %s\n", f.Type, f.Size, name)
	}
	return text(b.String(), map[string]any{"sandbox_id": id, "path": p, "entries": entries, "total": len(list)})
}
