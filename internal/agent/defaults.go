package agent

import (
	"os"
	"strings"
)

// Defaults are what requests get when they leave a field out: a
// template's user, environment and working directory (an image's config),
// given to PID 1 when the sandbox boots. The zero value is sandpool's own
// (DefaultUser, the agent's environment, the user's home).
type Defaults struct {
	// User is a name, a uid, or uid:gid.
	User string
	// Env is KEY=VALUE pairs over the agent's own environment and under
	// a request's.
	Env []string
	// Cwd is the working directory of processes that name none; one
	// that does not exist falls back to the user's home.
	Cwd string
}

// DefaultPath is the PATH processes get unless the call or the template
// sets one.
const DefaultPath = defaultPath

// SetDevices names the device nodes the sandbox's /dev holds beside its
// own (a GPU's), so a reset does not take them for something a session
// left. Call it before Serve.
func (s *Server) SetDevices(names []string) {
	s.devices = map[string]bool{}
	for _, n := range names {
		s.devices[n] = true
	}
}

// SetDefaults sets the defaults requests get; call it before Serve (a
// sandbox's PID 1 learns them with its configuration, after its agent is
// made).
func (s *Server) SetDefaults(d Defaults) { s.defaults = d }

// applyDefaults fills what req leaves out from the sandbox's defaults.
func (s *Server) applyDefaults(req *request) {
	d := s.defaults
	if req.User == "" && d.User != "" {
		req.User = d.User
	}
	if req.Op != "exec" {
		return
	}
	if len(d.Env) > 0 {
		env := make(map[string]string, len(d.Env)+len(req.Env))
		for _, kv := range d.Env {
			if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
				env[k] = v
			}
		}
		for k, v := range req.Env {
			env[k] = v
		}
		req.Env = env
	}
	if req.Cwd == "" && d.Cwd != "" {
		if st, err := os.Stat(d.Cwd); err == nil && st.IsDir() {
			req.Cwd = d.Cwd
		}
	}
}
