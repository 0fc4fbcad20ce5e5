package image

import (
	"fmt"

	"github.com/sandpool/sandpool/internal/errdefs"
)

// The kinds of error this package and internal/dockerfile return; every
// error a caller can act on wraps one of them. They are the project's
// shared kinds (internal/errdefs), so the API maps them without a
// translation table.
var (
	// ErrInvalid: bad input. A reference that does not parse, a refused
	// login, an unsupported media type or platform, a hostile, corrupt or
	// truncated layer, an image over the size limit, a Dockerfile that does
	// not parse, a user the image lacks.
	ErrInvalid = errdefs.ErrInvalid
	// ErrNotFound: no such image, tag, layer or owner record.
	ErrNotFound = errdefs.ErrNotFound
)

// Error is a failure caused by the input, with a message meant for the
// user. Kind is ErrInvalid or ErrNotFound.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap makes errors.Is(err, Kind) true.
func (e *Error) Unwrap() error { return e.Kind }

func invalidf(format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Msg: fmt.Sprintf(format, args...)}
}

func notFoundf(format string, args ...any) error {
	return &Error{Kind: ErrNotFound, Msg: fmt.Sprintf(format, args...)}
}

// Invalidf makes an *Error of kind ErrInvalid, for packages that build on
// this one (the Dockerfile builder).
func Invalidf(format string, args ...any) error { return invalidf(format, args...) }
