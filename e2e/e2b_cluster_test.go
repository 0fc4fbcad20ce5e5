package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// The E2B surface works through any node: control-plane calls, envd and
// files for a sandbox that lives on another node are answered there.
func TestE2BClusterForwarding(t *testing.T) {
	nodes := startCluster(t, 2)
	key := nodes[0].e2bKey("e2b-team")
	on0 := &e2bCall{t: t, s: nodes[0], key: key}
	status, b := on0.api("POST", "/v2/sandboxes", `{"templateID": "base", "timeout": 120}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, b)
	}
	var sb map[string]any
	json.Unmarshal(b, &sb)
	if sb["clientID"] != "node0" {
		t.Fatalf("made on %v", sb["clientID"])
	}
	on1 := &e2bCall{t: t, s: nodes[1], key: key, sbx: sb["sandboxID"].(string), token: sb["envdAccessToken"].(string)}
	defer on1.api("DELETE", "/sandboxes/"+on1.sbx, "")

	// envd through node1: a command, a file each way.
	msgs, end := on1.stream("process.Process/Start", `{"process": {"cmd": "/bin/bash", "args": ["-c", "hostname; echo $E2B_SANDBOX_ID"]}}`)
	var out strings.Builder
	for _, m := range msgs {
		if d, ok := m["event"].(map[string]any)["data"].(map[string]any); ok {
			b, _ := base64.StdEncoding.DecodeString(d["stdout"].(string))
			out.Write(b)
		}
	}
	if len(end) != 0 || out.String() != "sandbox\n"+on1.sbx+"\n" {
		t.Fatalf("a command through node1: %q %v", out.String(), end)
	}
	if status, b := on1.envd("POST", "/files?path=/tmp/x", "application/octet-stream", []byte("across"), nil); status != http.StatusOK {
		t.Fatalf("write through node1: %d %s", status, b)
	}
	if status, b := on1.envd("GET", "/files?path=/tmp/x", "", nil, nil); status != http.StatusOK || string(b) != "across" {
		t.Fatalf("read through node1: %d %q", status, b)
	}
	// The token is checked where the sandbox lives, forwarded or not.
	bad := *on1
	bad.token = strings.Repeat("0", 64)
	if status, _ := bad.envd("GET", "/health", "", nil, nil); status != http.StatusUnauthorized {
		t.Fatalf("a wrong token through node1: %d", status)
	}
	// The control plane through node1: get, metrics, pause, connect.
	for _, step := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/sandboxes/" + on1.sbx, "", 200},
		{"GET", "/sandboxes/" + on1.sbx + "/metrics", "", 200},
		{"POST", "/sandboxes/" + on1.sbx + "/pause", "{}", 204},
		{"POST", "/v2/sandboxes/" + on1.sbx + "/connect", `{"timeout": 60}`, 201},
		{"POST", "/sandboxes/" + on1.sbx + "/timeout", `{"timeout": 60}`, 204},
	} {
		if status, b := on1.api(step.method, step.path, step.body); status != step.status {
			t.Fatalf("%s %s through node1: %d %s", step.method, step.path, status, b)
		}
	}
	if status, b := on1.api("DELETE", "/sandboxes/"+on1.sbx, ""); status != http.StatusNoContent {
		t.Fatalf("kill through node1: %d %s", status, b)
	}
	if status, _ := on0.api("GET", "/sandboxes/"+on1.sbx, ""); status != http.StatusNotFound {
		t.Fatalf("after the kill, node0 answers %d", status)
	}
}
