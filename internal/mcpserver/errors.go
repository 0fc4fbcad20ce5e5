package mcpserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

// hints tell a model what to do about an API error, by its stable code.
// It is the one table from API errors to tool results: every tool's
// failure goes through toolError.
var hints = map[string]string{
	"not_found": "Check the sandbox id with list_sandboxes (leave sandbox_id out to use this session's own sandbox) " +
		"and paths with list_files.",
	"conflict":       "The sandbox is not in a state that allows this; use another sandbox, or leave sandbox_id out.",
	"exists":         "Choose another name.",
	"sandbox_failed": "The sandbox broke and was taken out of service: use another one (leave sandbox_id out for a fresh one).",
	"invalid":        "Fix the arguments and call again.",
	"bad_request":    "Fix the arguments and call again.",
	"too_large":      "Send less at once.",
	"pool_empty":     "The pool has no ready sandbox just now: call again in a few seconds, or use create_sandbox.",
	"at_capacity":    "The server runs as many sandboxes as it may: destroy the ones you no longer need, or call again later.",
	"in_progress":    "Call again in a second.",
	"timeout":        "It took too long: call again, or split the work.",
	"unauthorized":   "The API key is unknown or revoked: the user has to fix this MCP server's configuration.",
	"forbidden":      "The API key may not do this.",
	"shutting_down":  "The sandpool server is restarting: call again in a few seconds.",
	"node_unavailable": "The machine the sandbox lives on does not answer: call again in a few seconds, " +
		"or use another sandbox.",
	"not_supported": "This server cannot do that.",
}

// describe says what went wrong, for a model.
func describe(err error) string {
	var ae *client.APIError
	switch {
	case errors.As(err, &ae):
		msg := ae.Message
		if msg == "" {
			msg = ae.Code
		}
		if h := hints[ae.Code]; h != "" {
			return msg + ". " + h
		}
		return msg
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out: " + hints["timeout"]
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return err.Error()
}

// toolError is a failed call as a tool result (isError), with a message a
// model can act on: not a protocol error.
func toolError(op string, err error) *mcp.CallToolResult {
	var res mcp.CallToolResult
	res.SetError(fmt.Errorf("%s: %s", op, describe(err)))
	return &res
}

// userError is a mistake in a call's arguments, told back to the model.
type userError struct{ msg string }

func (e *userError) Error() string { return e.msg }

func userErrorf(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...)}
}

// isNotFound reports whether err is the API's 404.
func isNotFound(err error) bool { return client.IsNotFound(err) }
