package sandbox

import (
	"context"
	"encoding/json"
	"maps"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

// env is the environment every process of the sandbox gets: the create
// request's, then what its pool session added.
func (sp spec) env() map[string]string {
	if len(sp.SessionEnv) == 0 {
		return maps.Clone(sp.Env)
	}
	env := maps.Clone(sp.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, sp.SessionEnv)
	return env
}

// SetSession gives a sandbox acquired from a pool the environment
// variables (added to the pool's for every process) and the metadata of
// the caller's session. They go when it is released: the next session
// starts without them.
func (s *Service) SetSession(ctx context.Context, tenant, id string, env, metadata map[string]string) (Sandbox, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, err
	}
	if row.Pool == "" {
		return Sandbox{}, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is not from a pool", id)
	}
	if err := (CreateRequest{Template: row.Template, Env: env, Metadata: metadata}).Validate(); err != nil {
		return Sandbox{}, err
	}
	sp := specOf(row)
	sp.SessionEnv = env
	b, err := json.Marshal(sp)
	if err != nil {
		return Sandbox{}, err
	}
	spec := string(b)
	if metadata == nil {
		metadata = map[string]string{}
	}
	if err := s.st.UpdateSandbox(ctx, id, []string{string(StatusRunning)}, store.Update{Spec: &spec, Metadata: &metadata}); err != nil {
		return Sandbox{}, s.storeErr(err)
	}
	return s.Get(ctx, tenant, id)
}

// endSession is the update that takes a released sandbox's session
// environment and metadata away, or nil if it had none.
func endSession(row store.Sandbox) (metadata *map[string]string, spec *string) {
	sp := specOf(row)
	if len(row.Metadata) > 0 {
		metadata = &map[string]string{}
	}
	if len(sp.SessionEnv) > 0 {
		sp.SessionEnv = nil
		if b, err := json.Marshal(sp); err == nil {
			s := string(b)
			spec = &s
		}
	}
	return metadata, spec
}
