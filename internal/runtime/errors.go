package runtime

import (
	"errors"
	"fmt"
)

// Sentinel errors every layer wraps; the API maps them to status codes.
var (
	// ErrNotFound: no such sandbox, template, process or file.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is malformed (bad path, limit out of range).
	ErrInvalid = errors.New("invalid argument")
	// ErrExists: the thing to create already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the sandbox is in the wrong state for the request
	// (frozen, stopped, being destroyed), or a template is in use.
	ErrConflict = errors.New("conflict")
	// ErrNotSupported: the backend lacks the capability.
	ErrNotSupported = errors.New("not supported")
)

// UserError is a failure of the caller's request inside a healthy sandbox:
// a missing file, a command that does not exist, a path that escapes the
// root. The sandbox lives on. Kind is one of the sentinel errors.
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
