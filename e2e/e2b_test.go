package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
)

// e2bKey makes an E2B-form key (e2b_ and 40 hex digits) for a new tenant.
func (s *server) e2bKey(tenant string) string {
	s.t.Helper()
	k, err := s.client("").CreateKeyWith(context.Background(), client.KeyRequest{Tenant: tenant, E2B: true})
	if err != nil {
		s.t.Fatal(err)
	}
	return k.Secret
}

// runE2BNode runs a script of e2e/e2bnode with the E2B SDK package sdk
// against s as tenant key, and returns its last line of output.
func runE2BNode(t testing.TB, s *server, script, sdk, key string, env ...string) string {
	t.Helper()
	npmInstall(t, "e2bnode")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = "e2bnode"
	cmd.Env = append(os.Environ(), "E2B_SDK="+sdk, "E2B_API_URL="+s.url, "E2B_SANDBOX_URL="+s.url, "E2B_API_KEY="+key)
	cmd.Env = append(cmd.Env, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s with %s: %v\n%s%s\nserver log:\n%s", script, sdk, err, out, stderr.String(), s.log())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// The published JS SDK, at 2.51.0 (create and connect on /v2) and 2.50.0
// (on /sandboxes), unchanged, against the real server: e2bnode/sdk.mjs
// checks every call it makes; here, that it got to the end.
func TestE2BJSSDK(t *testing.T) {
	s := startServer(t, "")
	// Which routes each version uses: 2.51 creates and connects on /v2,
	// 2.50 on /sandboxes (the server's metrics count them).
	routes := map[string][2]string{
		"e2b251": {"POST /v2/sandboxes", "POST /v2/sandboxes/{id}/connect"},
		"e2b250": {"POST /sandboxes", "POST /sandboxes/{id}/connect"},
	}
	for _, sdk := range []string{"e2b251", "e2b250"} {
		t.Run(sdk, func(t *testing.T) {
			before := s.metrics(t)
			key, other := s.e2bKey("js-"+sdk), s.e2bKey("other-"+sdk)
			last := runE2BNode(t, s, "sdk.mjs", sdk, key, "E2B_OTHER_KEY="+other)
			t.Logf("%s: %s", sdk, last)
			var seen struct {
				Timeout    bool   `json:"timeout"`
				PTY        bool   `json:"pty"`
				Watch      int    `json:"watch"`
				GetHost    string `json:"getHost"`
				Isolated   bool   `json:"isolated"`
				Resumed    bool   `json:"resumed"`
				AutoResume bool   `json:"autoResume"`
			}
			if err := json.Unmarshal([]byte(last), &seen); err != nil {
				t.Fatalf("the script's last line %q: %v", last, err)
			}
			if !seen.Timeout || !seen.PTY || seen.Watch == 0 || !strings.HasSuffix(seen.GetHost, ".sandpool.localhost") ||
				!seen.Isolated || !seen.Resumed || !seen.AutoResume {
				t.Fatalf("the script did not get through: %+v", seen)
			}
			after := s.metrics(t)
			for _, route := range routes[sdk] {
				for _, code := range []string{"201"} {
					series := `sandpool_e2b_requests_total{code="` + code + `",route="` + route + `",surface="api"}`
					if metricValue(after, series) <= metricValue(before, series) {
						t.Errorf("%s did not use %s (%s)", sdk, route, series)
					}
				}
			}
			// It killed what it made: nothing of the tenant's is left.
			list, err := s.client(key).ListSandboxes(context.Background(), client.ListOptions{})
			if err != nil || len(list) != 0 {
				t.Fatalf("left behind: %+v %v", list, err)
			}
		})
	}
}

// metricValue reads one series' value from a /metrics page (0 if absent).
func metricValue(page, series string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}
