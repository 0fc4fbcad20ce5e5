package dashboard

import (
	"context"
	"errors"
	"net/http"

	"github.com/sandpool/sandpool/internal/errdefs"
)

// Errors the dashboard itself raises (about the browser's request).
var (
	errSignedOut = errors.New("you are not signed in, or your session has ended")
	errCSRF      = errors.New("this form has expired or did not come from this dashboard; reload the page and try again")
	errAdmin     = errors.New("this page is for admin keys only")
	errBadForm   = errors.New("the form is incomplete or malformed")
	errNoRoute   = errors.New("there is no such page")
)

// kinds maps each kind of error to a status and the page's title, in the
// order they are tried: the dashboard's own first, then the kinds every
// layer wraps (internal/errdefs). It is the only place that picks an error
// status, as statusFor is in the API.
var kinds = []struct {
	err    error
	status int
	title  string
}{
	{errSignedOut, http.StatusUnauthorized, "Signed out"},
	{errCSRF, http.StatusForbidden, "Request refused"},
	{errAdmin, http.StatusForbidden, "Admins only"},
	{errBadForm, http.StatusBadRequest, "Bad request"},
	{errNoRoute, http.StatusNotFound, "Not found"},

	{errdefs.ErrNotFound, http.StatusNotFound, "Not found"},
	{errdefs.ErrInvalid, http.StatusUnprocessableEntity, "Invalid request"},
	{errdefs.ErrExists, http.StatusConflict, "Already exists"},
	{errdefs.ErrConflict, http.StatusConflict, "Not possible now"},
	{errdefs.ErrPermission, http.StatusForbidden, "Permission denied"},
	{errdefs.ErrExhausted, http.StatusTooManyRequests, "Limit reached"},
	{errdefs.ErrUnavailable, http.StatusServiceUnavailable, "Unavailable"},
	{errdefs.ErrFailed, http.StatusUnprocessableEntity, "Failed"},
	{errdefs.ErrNotSupported, http.StatusNotImplemented, "Not supported"},
	{context.DeadlineExceeded, http.StatusGatewayTimeout, "Timed out"},
	{context.Canceled, 499, "Canceled"}, // the browser went away; nobody reads this
}

// statusFor maps an error to its status and the title of its page; the
// message shown is the error's own, except for a 500, whose details go to
// the log only.
func statusFor(err error) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "Too large"
	case errdefs.IsStateError(err):
		// Before the kinds: a broken sandbox's error may wrap any of them.
		return http.StatusConflict, "Sandbox failed"
	}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.status, k.title
		}
	}
	return http.StatusInternalServerError, "Something went wrong"
}
