package mcpserver

import (
	"context"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

func (t *tools) createSandbox(c *call, a createSandboxArgs) *mcp.CallToolResult {
	req, err := a.request()
	if err != nil {
		return toolError("create_sandbox", err)
	}
	sb, err := c.ss.c.CreateSandbox(c.ctx, req)
	if err != nil {
		return toolError("create_sandbox", err)
	}
	return text(fmt.Sprintf("Created sandbox %s (template %s). Pass it as sandbox_id; it outlives this session: "+
		"destroy it with destroy_sandbox when done.", sb.ID, sb.Template), infoOf(sb))
}

func (t *tools) destroySandbox(c *call, a sandboxIDArgs) *mcp.CallToolResult {
	if err := a.check(); err != nil {
		return toolError("destroy_sandbox", err)
	}
	if err := c.ss.c.DeleteSandbox(c.ctx, a.SandboxID); err != nil {
		return toolError("destroy_sandbox", err)
	}
	own := a.SandboxID == c.ss.ownID()
	c.ss.forget(a.SandboxID)
	msg := fmt.Sprintf("Destroyed sandbox %s.", a.SandboxID)
	if own {
		msg += " It was this session's own: the next call that needs one makes a fresh one."
	}
	return text(msg, map[string]any{"sandbox_id": a.SandboxID, "destroyed": true})
}

func (t *tools) listSandboxes(c *call, _ noArgs) *mcp.CallToolResult {
	list, err := c.ss.c.ListSandboxes(c.ctx, client.ListOptions{})
	if err != nil {
		return toolError("list_sandboxes", err)
	}
	own := c.ss.ownID()
	out := make([]sandboxInfo, 0, len(list))
	var b strings.Builder
	for i := range list {
		in := infoOf(&list[i])
		in.Session = in.ID == own
		out = append(out, in)
		fmt.Fprintf(&b, "%s  %s  template %s", in.ID, in.Status, in.Template)
		if in.Pool != "" {
			fmt.Fprintf(&b, "  pool %s", in.Pool)
		}
		if in.Session {
			b.WriteString("  (this session's own)")
		}
		b.WriteByte('\n')
	}
	if len(out) == 0 {
		b.WriteString("No sandboxes. The tools that take a sandbox_id make this session's own when they need it.\n")
	}
	return text(b.String(), map[string]any{"sandboxes": out})
}

func (t *tools) acquire(c *call, a acquireArgs) *mcp.CallToolResult {
	pool := a.Pool
	if pool == "" {
		pool = t.pool
	}
	if !poolName.MatchString(pool) {
		return toolError("acquire_from_pool", userErrorf("pool %q: want a-z, 0-9, '.', '_' and '-'", pool))
	}
	sb, err := c.ss.c.Acquire(c.ctx, pool, 0)
	if err != nil {
		return toolError("acquire_from_pool", err)
	}
	if !c.ss.adopt(sb.ID, pool, false) { // the session ended meanwhile: give it back
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), cleanupTimeout)
		defer cancel()
		c.ss.dispose(ctx, t.s.cfg, sb.ID, pool)
		return toolError("acquire_from_pool", errSessionEnded)
	}
	return text(fmt.Sprintf("Acquired sandbox %s from pool %s. Pass it as sandbox_id; release it when done "+
		"(it is released when this session ends).", sb.ID, pool), infoOf(sb))
}

func (t *tools) release(c *call, a releaseArgs) *mcp.CallToolResult {
	id := a.SandboxID
	if id == "" {
		id = c.ss.ownID()
		if pool, _ := c.ss.owns(id); id == "" || pool == "" {
			return toolError("release", userErrorf("this session has no sandbox from a pool: give sandbox_id"))
		}
	}
	if _, err := c.ss.c.Release(c.ctx, id, false); err != nil {
		return toolError("release", err)
	}
	c.ss.forget(id)
	return text(fmt.Sprintf("Released sandbox %s: it goes back to its pool, reset.", id),
		map[string]any{"sandbox_id": id, "released": true})
}
