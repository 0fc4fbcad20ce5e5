package dashboard

import (
	"net/http"

	"github.com/sandpool/sandpool/internal/events"
)

// eventsShown is how many recent events the events page starts with.
const eventsShown = 200

// eventsPage lists the tenant's recent transitions (those this node saw
// since it started), newest first; new ones are added live.
func (s *Server) eventsPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	list := s.history.latest(eventsShown, func(e events.Event) bool { return visible(sess, e) })
	s.render(w, r, http.StatusOK, "events", page{Title: "Events", Nav: "events", Session: sess, Live: "view=events", Data: list})
	return nil
}
