package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// Hooks are a template's shell scripts, run as root inside the sandbox:
// Setup once when a sandbox is made (before it counts as ready; what it
// writes is kept across sessions), SessionSetup before each session and
// SessionTeardown after each.
type Hooks struct {
	Setup           string `json:"setup,omitempty"`
	SessionSetup    string `json:"session_setup,omitempty"`
	SessionTeardown string `json:"session_teardown,omitempty"`
	// SetupTimeout bounds each hook, in seconds; 0 means 600.
	SetupTimeout int `json:"setup_timeout,omitempty"`
	// Network is the egress policy Setup runs under (in every sandbox
	// made of the template, and in a build), for example to install
	// packages; nil means the sandbox's own. The sandbox gets its own
	// policy once Setup is done.
	Network *Network `json:"network,omitempty"`
}

func (h Hooks) setupTimeout() time.Duration {
	if h.SetupTimeout <= 0 {
		return 10 * time.Minute
	}
	return time.Duration(h.SetupTimeout) * time.Second
}

func (h Hooks) empty() bool {
	return h.Setup == "" && h.SessionSetup == "" && h.SessionTeardown == "" && h.Network == nil
}

// Template is a template as callers see it.
type Template struct {
	Name      string    `json:"name"`
	BuiltIn   bool      `json:"built_in"`
	CreatedAt time.Time `json:"created_at"`
	SizeBytes int64     `json:"size_bytes"`
	// From is the template whose files this one uses, for a template
	// defined on another.
	From  string `json:"from,omitempty"`
	Hooks Hooks  `json:"hooks,omitzero"`
	// Origin says where its files came from: "image REF@DIGEST",
	// "Dockerfile (FROM ...)", "directory DIR", "tar archive".
	Origin string `json:"origin,omitempty"`
	// Image describes a template made from an image or a Dockerfile: its
	// layers (and how many other templates share), its config.
	Image *TemplateImage `json:"image,omitempty"`
	// Limits are what its sandboxes get where a create leaves a limit at
	// zero ("gpus": 1: a GPU template).
	Limits *Limits `json:"limits,omitempty"`
}

// templateRecord is what the store keeps of a template defined here (its
// hooks column, as JSON): the hooks and, beside them, the limits its
// sandboxes get by default. A record without limits reads as before.
type templateRecord struct {
	Hooks
	Limits *Limits `json:"limits,omitempty"`
}

// TemplateUsers says what else uses a template; the pool manager does
// (its pools' templates). DeleteTemplate refuses a template in use.
type TemplateUsers interface {
	// UsingTemplate names what uses template.
	UsingTemplate(ctx context.Context, template string) ([]string, error)
}

// AddTemplateUsers makes DeleteTemplate ask u too.
func (s *Service) AddTemplateUsers(u TemplateUsers) {
	s.tplMu.Lock()
	s.users = append(s.users, u)
	s.tplMu.Unlock()
}

// resolved is a template looked up: its files' runtime template, hooks
// and default limits.
type resolved struct {
	rootfs  string
	hooks   Hooks
	limits  Limits
	expires time.Time
}

// templateCacheTTL bounds how long a lookup is reused. Changes made
// through this service are seen at once; changes by another node within
// this time.
const templateCacheTTL = 2 * time.Second

// resolveTemplate finds the runtime template a template's files come from
// and its hooks.
func (s *Service) resolveTemplate(ctx context.Context, name string) (string, Hooks, error) {
	r, err := s.lookupTemplate(ctx, name)
	return r.rootfs, r.hooks, err
}

// lookupTemplate is resolveTemplate with the template's default limits.
func (s *Service) lookupTemplate(ctx context.Context, name string) (resolved, error) {
	now := time.Now()
	s.tplMu.Lock()
	r, ok := s.tplCache[name]
	s.tplMu.Unlock()
	if ok && now.Before(r.expires) {
		return r, nil
	}
	r = resolved{rootfs: name, expires: now.Add(templateCacheTTL)}
	t, err := s.st.GetTemplate(ctx, name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		// A runtime template, or unknown (the runtime says).
	case err != nil:
		return resolved{}, err
	default:
		var rec templateRecord
		if err := json.Unmarshal([]byte(t.Hooks), &rec); err != nil {
			return resolved{}, fmt.Errorf("template %s: hooks: %w", name, err)
		}
		r.rootfs, r.hooks = t.Base, rec.Hooks
		if rec.Limits != nil {
			r.limits = *rec.Limits
		}
	}
	s.tplMu.Lock()
	s.tplCache[name] = r
	s.tplMu.Unlock()
	return r, nil
}

// forgetTemplates drops cached lookups after a change.
func (s *Service) forgetTemplates() {
	s.tplMu.Lock()
	clear(s.tplCache)
	s.tplMu.Unlock()
}

// Templates lists runtime templates and templates defined on them.
func (s *Service) Templates(ctx context.Context) ([]Template, error) {
	rts, err := s.rt.Templates(ctx)
	if err != nil {
		return nil, err
	}
	defined, err := s.st.ListTemplates(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]store.Template{}
	for _, d := range defined {
		byName[d.Name] = d
	}
	imgs := s.imageInfos()
	out := make([]Template, 0, len(rts)+len(defined))
	for _, t := range rts {
		tpl := Template{Name: t.Name, BuiltIn: t.BuiltIn, CreatedAt: t.CreatedAt, SizeBytes: t.SizeBytes, Origin: t.Origin, Image: imgs[t.Name]}
		if d, ok := byName[t.Name]; ok { // a runtime template given hooks
			tpl.Hooks, tpl.Limits = recordOf(d)
			delete(byName, t.Name)
		}
		out = append(out, tpl)
	}
	for _, d := range defined {
		if _, ok := byName[d.Name]; !ok {
			continue
		}
		tpl := Template{Name: d.Name, From: d.Base, CreatedAt: d.CreatedAt}
		tpl.Hooks, tpl.Limits = recordOf(d)
		out = append(out, tpl)
	}
	return out, nil
}

// recordOf reads a defined template's hooks and limits.
func recordOf(t store.Template) (Hooks, *Limits) {
	var rec templateRecord
	_ = json.Unmarshal([]byte(t.Hooks), &rec) // written by us
	return rec.Hooks, rec.Limits
}

// DefineTemplate makes a template that uses the files of from (a runtime
// template, or another defined one) with hooks; from's hooks apply where
// hooks leaves one empty. With from == name it gives an imported runtime
// template hooks.
func (s *Service) DefineTemplate(ctx context.Context, name, from string, hooks Hooks) (Template, error) {
	return s.defineTemplate(ctx, name, from, hooks, nil)
}

// defineTemplate is DefineTemplate with the limits its sandboxes get by
// default (nil: from's).
func (s *Service) defineTemplate(ctx context.Context, name, from string, hooks Hooks, limits *Limits) (Template, error) {
	if name == "" || from == "" {
		return Template{}, errdefs.Userf(errdefs.ErrInvalid, "a template needs a name and the template it is made from")
	}
	if hooks.SetupTimeout < 0 {
		return Template{}, errdefs.Userf(errdefs.ErrInvalid, "setup_timeout %d must not be negative", hooks.SetupTimeout)
	}
	base, inherited := from, Hooks{}
	if name != from {
		r, err := s.lookupTemplate(ctx, from)
		if err != nil {
			return Template{}, err
		}
		base, inherited = r.rootfs, r.hooks
		if limits == nil && r.limits != (Limits{}) {
			limits = &r.limits
		}
	}
	var check Limits
	if limits != nil {
		check = *limits
	}
	if err := s.rt.Validate(runtime.Spec{ID: "sb_check", Template: base, Limits: check}); err != nil {
		return Template{}, err
	}
	if err := s.checkGPUs(check.GPUs); err != nil {
		return Template{}, fmt.Errorf("template %s: %w", name, err)
	}
	if name != from && s.rt.Validate(runtime.Spec{ID: "sb_check", Template: name}) == nil {
		return Template{}, errdefs.Userf(errdefs.ErrExists, "template %q already exists", name)
	}
	if hooks.Setup == "" {
		hooks.Setup = inherited.Setup
	}
	if hooks.SessionSetup == "" {
		hooks.SessionSetup = inherited.SessionSetup
	}
	if hooks.SessionTeardown == "" {
		hooks.SessionTeardown = inherited.SessionTeardown
	}
	if hooks.SetupTimeout == 0 {
		hooks.SetupTimeout = inherited.SetupTimeout
	}
	if hooks.Network == nil {
		hooks.Network = inherited.Network
	}
	if hooks.Network != nil {
		n := normal(*hooks.Network)
		if err := s.rt.Validate(runtime.Spec{ID: "sb_check", Template: base, Network: n}); err != nil {
			return Template{}, err
		}
		hooks.Network = &n
	}
	b, err := json.Marshal(templateRecord{Hooks: hooks, Limits: limits})
	if err != nil {
		return Template{}, err
	}
	t := store.Template{Name: name, Base: base, Hooks: string(b), CreatedAt: time.Now().UTC()}
	defer s.forgetTemplates()
	if err := s.st.CreateTemplate(ctx, t); err != nil {
		if errors.Is(err, errdefs.ErrExists) {
			return Template{}, errdefs.Userf(errdefs.ErrExists, "template %q already exists", name)
		}
		return Template{}, err
	}
	out := Template{Name: name, CreatedAt: t.CreatedAt, Hooks: hooks, Limits: limits}
	if base != name {
		out.From = base
	}
	return out, nil
}

// DeleteTemplate removes a template. One that pools, this node's
// sandboxes or templates defined on it use cannot be deleted before them.
func (s *Service) DeleteTemplate(ctx context.Context, name string) error {
	if err := s.checkUnused(ctx, name); err != nil {
		return err
	}
	defined, err := s.st.ListTemplates(ctx)
	if err != nil {
		return err
	}
	own := false
	for _, d := range defined {
		switch {
		case d.Name == name:
			own = true
		case d.Base == name:
			return errdefs.Userf(errdefs.ErrConflict, "template %q is used by template %q; delete that first", name, d.Name)
		}
	}
	defer s.forgetTemplates()
	if own {
		if err := s.st.DeleteTemplate(ctx, name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	}
	err = s.rt.DeleteTemplate(ctx, name)
	if own && errors.Is(err, errdefs.ErrNotFound) {
		return nil // it was only a definition
	}
	if err == nil && s.cfg.Images != nil {
		// Its image record, then the layers no other template uses. A
		// crash before leaves a record GC drops at the next start.
		if err := s.cfg.Images.Forget(name); err != nil {
			s.cfg.Log.Error("forget a deleted template's image", "template", name, "err", err)
		}
		s.gcImages(context.WithoutCancel(ctx))
	}
	return err
}

// checkUnused refuses, naming them, the pools (of every tenant and node)
// and this node's active sandboxes (of every tenant) that use template
// name.
func (s *Service) checkUnused(ctx context.Context, name string) error {
	var users []string
	s.tplMu.Lock()
	tu := slices.Clone(s.users)
	s.tplMu.Unlock()
	for _, u := range tu {
		names, err := u.UsingTemplate(ctx, name)
		if err != nil {
			return err
		}
		for _, n := range names {
			users = append(users, fmt.Sprintf("pool %q", n))
		}
	}
	// Templates are this node's; so are the sandboxes made of them.
	rows, err := s.st.ListSandboxes(ctx, store.Filter{Node: s.cfg.Node, Statuses: statusStrings(Active)})
	if err != nil {
		return err
	}
	var sandboxes []string
	for _, row := range rows {
		if row.Template == name && row.Tenant != buildTenant {
			sandboxes = append(sandboxes, row.ID)
		}
	}
	if len(sandboxes) > 0 {
		list := sandboxes
		if len(list) > 5 {
			list = list[:5]
		}
		what := "sandbox " + strings.Join(list, ", ")
		if len(sandboxes) > 1 {
			what = "sandboxes " + strings.Join(list, ", ")
		}
		if len(sandboxes) > len(list) {
			what += fmt.Sprintf(" (%d in all)", len(sandboxes))
		}
		users = append(users, what)
	}
	if len(users) > 0 {
		return errdefs.Userf(errdefs.ErrConflict, "template %q is in use by %s: delete them first", name, strings.Join(users, " and "))
	}
	return nil
}

// CheckTemplate checks that sandboxes can be made of template with limits,
// without making one (CheckNetwork checks a policy).
func (s *Service) CheckTemplate(ctx context.Context, template string, limits runtime.Limits) error {
	r, err := s.lookupTemplate(ctx, template)
	if err != nil {
		return err
	}
	limits = limits.WithDefaults(r.limits)
	if err := s.rt.Validate(runtime.Spec{ID: "sb_check", Template: r.rootfs, Limits: limits}); err != nil {
		return err
	}
	return s.checkGPUs(limits.GPUs)
}
