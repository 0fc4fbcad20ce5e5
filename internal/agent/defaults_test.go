package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestApplyDefaults(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		defaults  Defaults
		req, want request
	}{
		{name: "zero defaults change nothing",
			req: request{Op: "exec", Cmd: []string{"true"}}, want: request{Op: "exec", Cmd: []string{"true"}}},
		{name: "image defaults fill an exec",
			defaults: Defaults{User: "0:0", Env: []string{"A=image", "B=image", "PATH=/opt/bin"}, Cwd: dir},
			req:      request{Op: "exec", Env: map[string]string{"B": "call"}},
			want:     request{Op: "exec", User: "0:0", Cwd: dir, Env: map[string]string{"A": "image", "B": "call", "PATH": "/opt/bin"}}},
		{name: "a call's own user and cwd win",
			defaults: Defaults{User: "0:0", Cwd: dir},
			req:      request{Op: "exec", User: "user", Cwd: "/tmp"},
			want:     request{Op: "exec", User: "user", Cwd: "/tmp"}},
		{name: "a missing working directory is left to the home",
			defaults: Defaults{Cwd: dir + "/missing"},
			req:      request{Op: "exec"}, want: request{Op: "exec"}},
		{name: "files get the user only",
			defaults: Defaults{User: "1000:50", Env: []string{"A=1"}, Cwd: dir},
			req:      request{Op: "write", Path: "/x"}, want: request{Op: "write", Path: "/x", User: "1000:50"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{defaults: tc.defaults}
			got := tc.req
			s.applyDefaults(&got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
