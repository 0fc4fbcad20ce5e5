package e2b

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// maxPage is the most sandboxes one page of a list holds (E2B's).
const maxPage = 100

// listV2 lists the tenant's sandboxes (GET /v2/sandboxes), newest first
// (order=asc: oldest first), filtered by state (running, paused; default
// both), metadata, template and startedAfter, a page of limit at a time:
// the X-Next-Token header is there when more follow, and is given back as
// nextToken.
func (s *Server) listV2(w http.ResponseWriter, r *http.Request, tenant string) {
	q := r.URL.Query()
	var statuses []sandbox.Status
	for _, st := range splitList(q["state"]) {
		switch st {
		case "running":
			statuses = append(statuses, sandbox.StatusRunning)
		case "paused":
			statuses = append(statuses, sandbox.StatusPaused)
		default:
			s.writeAPIError(w, r, fmt.Errorf("%w: state %q: want running or paused", errBadRequest, st))
			return
		}
	}
	if len(statuses) == 0 {
		statuses = []sandbox.Status{sandbox.StatusRunning, sandbox.StatusPaused}
	}
	limit := maxPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPage {
			s.writeAPIError(w, r, fmt.Errorf("%w: limit %q: want 1 to %d", errBadRequest, v, maxPage))
			return
		}
		limit = n
	}
	asc := false
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		asc = true
	default:
		s.writeAPIError(w, r, fmt.Errorf("%w: order %q: want asc or desc", errBadRequest, q.Get("order")))
		return
	}
	var after time.Time
	if v := q.Get("startedAfter"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.writeAPIError(w, r, fmt.Errorf("%w: startedAfter %q: want an RFC 3339 time", errBadRequest, v))
			return
		}
		after = t
	}
	md, err := parseMetadata(q.Get("metadata"))
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	list, err := s.svc.List(r.Context(), tenant, sandbox.ListOptions{Statuses: statuses, Metadata: md})
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	template := q.Get("template")
	list = slices.DeleteFunc(list, func(sb sandbox.Sandbox) bool {
		return (template != "" && sb.Template != template) || (!after.IsZero() && !sb.CreatedAt.After(after))
	})
	// Ids sort as their creation times do: the cursor is the last id shown.
	slices.SortFunc(list, func(a, b sandbox.Sandbox) int {
		if asc {
			return strings.Compare(a.ID, b.ID)
		}
		return strings.Compare(b.ID, a.ID)
	})
	if tok := q.Get("nextToken"); tok != "" {
		id, ok := fromE2B(tok)
		if !ok {
			s.writeAPIError(w, r, fmt.Errorf("%w: nextToken %q", errBadRequest, tok))
			return
		}
		list = slices.DeleteFunc(list, func(sb sandbox.Sandbox) bool {
			if asc {
				return sb.ID <= id
			}
			return sb.ID >= id
		})
	}
	if len(list) > limit {
		list = list[:limit]
		w.Header().Set("X-Next-Token", toE2B(list[limit-1].ID))
	}
	s.writeList(w, list)
}

// listV1 lists the tenant's running sandboxes (GET /sandboxes), with a
// metadata filter.
func (s *Server) listV1(w http.ResponseWriter, r *http.Request, tenant string) {
	md, err := parseMetadata(r.URL.Query().Get("metadata"))
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	list, err := s.svc.List(r.Context(), tenant, sandbox.ListOptions{Statuses: []sandbox.Status{sandbox.StatusRunning}, Metadata: md})
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	s.writeList(w, list)
}

func (s *Server) writeList(w http.ResponseWriter, list []sandbox.Sandbox) {
	now := time.Now()
	out := make([]listedJSON, 0, len(list))
	for _, sb := range list {
		out = append(out, s.listed(sb, now))
	}
	writeJSON(w, http.StatusOK, out)
}

// parseMetadata reads a metadata filter as the SDKs send it: a query
// string of key=value pairs, its keys and values escaped, the whole
// escaped again (as E2B's API decodes it). Every pair must match.
func parseMetadata(v string) (map[string]string, error) {
	if v == "" {
		return nil, nil
	}
	inner, err := url.QueryUnescape(v)
	if err != nil {
		return nil, fmt.Errorf("%w: metadata %q: %v", errBadRequest, v, err)
	}
	md := map[string]string{}
	for _, pair := range strings.Split(inner, "&") {
		if pair == "" {
			continue
		}
		k, val, _ := strings.Cut(pair, "=")
		key, err1 := url.QueryUnescape(k)
		value, err2 := url.QueryUnescape(val)
		if err1 != nil || err2 != nil || key == "" {
			return nil, fmt.Errorf("%w: metadata pair %q", errBadRequest, pair)
		}
		md[key] = value
	}
	return md, nil
}

// splitList reads a list parameter, repeated or comma-separated.
func splitList(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, one := range strings.Split(v, ",") {
			if one = strings.TrimSpace(one); one != "" {
				out = append(out, one)
			}
		}
	}
	return out
}
