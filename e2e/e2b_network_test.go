package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
)

// The E2B SDK's network options (allowInternetAccess, network.allowOut and
// denyOut, updateNetwork), through the published JS SDK run in the fake
// internet's host namespace, against the real server there.
func TestE2BNetwork(t *testing.T) {
	w, hosts := newWorld(t)
	s := startServerIn(t, w, "", "--egress-hosts-file", hosts)
	key := s.e2bKey("e2b-net")
	npmInstall(t, "e2bnode")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := w.Command("node", "network.mjs")
	cmd.Dir = "e2bnode"
	cmd.Env = append(os.Environ(), "E2B_SDK=e2b251", "E2B_API_URL="+s.url, "E2B_SANDBOX_URL="+s.url, "E2B_API_KEY="+key)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			_ = cmd.Process.Kill()
		case <-done:
		}
	}()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node network.mjs: %v\n%s%s\nserver log:\n%s", err, out, stderr.String(), s.log())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var seen struct{ Updated, Allowlist, Denied bool }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &seen); err != nil || !seen.Updated || !seen.Allowlist || !seen.Denied {
		t.Fatalf("the script did not get through (%v): %s", err, out)
	}
	if list, err := s.client("").ListSandboxes(context.Background(), client.ListOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("sandboxes left: %+v %v", list, err)
	}
}
