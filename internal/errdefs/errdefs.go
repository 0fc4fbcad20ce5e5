// Package errdefs holds the kinds of error every layer of sandpool wraps:
// the store, the runtime, the agent's client, the lifecycle service, pools
// and the API all return errors that are (or wrap) one of these, so one
// function in each front end (statusFor in the API) maps them to a status
// without translation tables.
//
// Two types carry more than a kind: a *UserError is a request that failed
// in a healthy sandbox (the sandbox lives on), a *StateError says the
// sandbox itself is broken (it is retired and replaced). They are never
// collapsed into strings.
package errdefs

import (
	"errors"
	"fmt"
)

// The kinds. Wrap them (fmt.Errorf("...: %w", ErrNotFound)) or make a
// *UserError of one with Userf.
var (
	// ErrNotFound: no such sandbox, template, pool, process, key or file.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is malformed (bad path, limit out of range).
	ErrInvalid = errors.New("invalid argument")
	// ErrExists: the thing to create already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the thing is in the wrong state for the request (a
	// sandbox paused or being destroyed, a template in use), or a
	// conditional update found it changed.
	ErrConflict = errors.New("conflict")
	// ErrNotSupported: the backend lacks the capability.
	ErrNotSupported = errors.New("not supported")
	// ErrPermission: the sandbox's user may not do that (a file it cannot
	// write).
	ErrPermission = errors.New("permission denied")
	// ErrExhausted: a limit is reached (the sandbox's process limit, the
	// node's capacity, a pool with nothing idle); trying later may work.
	ErrExhausted = errors.New("resource exhausted")
	// ErrUnavailable: the service cannot answer now (shutting down, the
	// node that owns the sandbox is down); retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrFailed: the template's own code failed (a setup hook exited
	// non-zero): the request was fine, the template is not.
	ErrFailed = errors.New("failed")
)

// Coded is a kind with a stable machine code more precise than the kind's
// own (at_capacity rather than resource_exhausted). Make them once, as
// package-level sentinels, with New.
type Coded struct {
	kind error
	code string
	msg  string
}

// New makes a sentinel error of kind with a machine code.
func New(kind error, code, msg string) *Coded { return &Coded{kind: kind, code: code, msg: msg} }

func (e *Coded) Error() string { return e.msg }

// Unwrap makes errors.Is(err, kind) true.
func (e *Coded) Unwrap() error { return e.kind }

// Code is the machine code.
func (e *Coded) Code() string { return e.code }

// CodeOf returns the machine code of the first Coded error in err's chain,
// or "" if there is none.
func CodeOf(err error) string {
	var c *Coded
	if errors.As(err, &c) {
		return c.code
	}
	return ""
}

// UserError is a failure of the caller's request inside a healthy sandbox:
// a missing file, a command that does not exist, a path that escapes the
// root. The sandbox lives on. Kind is one of the kinds above (or a Coded).
type UserError struct {
	Kind error
	Msg  string
}

func (e *UserError) Error() string { return e.Msg }
func (e *UserError) Unwrap() error { return e.Kind }

// Userf makes a UserError of kind.
func Userf(kind error, format string, args ...any) error {
	return &UserError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// StateError means the sandbox itself is broken (agent unreachable, cgroup
// gone): it should be retired and replaced.
type StateError struct {
	Sandbox string
	Err     error
}

func (e *StateError) Error() string {
	return fmt.Sprintf("sandbox %s is broken: %v", e.Sandbox, e.Err)
}
func (e *StateError) Unwrap() error { return e.Err }

// IsStateError reports whether err says the sandbox is broken.
func IsStateError(err error) bool {
	var se *StateError
	return errors.As(err, &se)
}
