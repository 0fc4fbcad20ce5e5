package pool

import "sort"

// OfTemplate names tenant's pools of template that take acquires (not
// draining), by name, from what this node knows of them: no store round
// trip, for front ends that serve a create from a pool when one exists.
func (m *Manager) OfTemplate(tenant, template string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, p := range m.pools {
		if p.tenant != tenant {
			continue
		}
		p.mu.Lock()
		ok := p.cfg.Template == template && p.status != StatusDraining
		p.mu.Unlock()
		if ok {
			out = append(out, p.name)
		}
	}
	sort.Strings(out)
	return out
}
