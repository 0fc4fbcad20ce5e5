package dashboard

import (
	"net/http"

	"github.com/sandpool/sandpool/internal/errdefs"
)

// terminal will connect a WebSocket to a shell on a PTY in the sandbox;
// it waits for the PTY support in the service.
func (s *Server) terminal(w http.ResponseWriter, r *http.Request, sess *session) error {
	return errdefs.Userf(errdefs.ErrNotSupported, "the terminal is not built yet")
}
