package sandbox

import (
	"context"
	"errors"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

// row reads a sandbox of tenant; another tenant's sandbox is not found.
func (s *Service) row(ctx context.Context, tenant, id string) (store.Sandbox, error) {
	row, err := s.st.GetSandbox(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) || (err == nil && row.Tenant != tenant) {
		return store.Sandbox{}, errdefs.Userf(errdefs.ErrNotFound, "no sandbox %q", id)
	}
	return row, err
}

// Get returns one sandbox.
func (s *Service) Get(ctx context.Context, tenant, id string) (Sandbox, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// ListOptions filter List.
type ListOptions struct {
	// Statuses to include; empty means the active ones.
	Statuses []Status
	// Metadata entries a sandbox must all have.
	Metadata map[string]string
	// Pool, if set, keeps only that pool's sandboxes.
	Pool string
}

// List returns tenant's sandboxes, oldest first.
func (s *Service) List(ctx context.Context, tenant string, opts ListOptions) ([]Sandbox, error) {
	statuses := opts.Statuses
	if len(statuses) == 0 {
		statuses = Active
	}
	rows, err := s.st.ListSandboxes(ctx, store.Filter{Tenant: tenant, Pool: opts.Pool, Statuses: statusStrings(statuses)})
	if err != nil {
		return nil, err
	}
	out := make([]Sandbox, 0, len(rows))
	for _, row := range rows {
		match := true
		for k, v := range opts.Metadata {
			if row.Metadata[k] != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, s.fromRow(row))
		}
	}
	return out, nil
}

// Lookup returns a sandbox of any tenant (its Tenant says whose). It is for
// front ends that authenticate a request by something the sandbox itself
// holds (an access token made for it) rather than by a tenant's key.
func (s *Service) Lookup(ctx context.Context, id string) (Sandbox, error) {
	row, err := s.st.GetSandbox(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return Sandbox{}, errdefs.Userf(errdefs.ErrNotFound, "no sandbox %q", id)
	}
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// NodeOf names the node a sandbox lives on ("" if it is not known).
func (s *Service) NodeOf(ctx context.Context, id string) (string, error) {
	row, err := s.st.GetSandbox(ctx, id)
	if err != nil {
		return "", err
	}
	return row.Node, nil
}

// Exists reports whether a sandbox with this id was ever recorded (in any
// status, for any tenant).
func (s *Service) Exists(ctx context.Context, id string) (bool, error) {
	_, err := s.st.GetSandbox(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
