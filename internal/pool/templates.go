package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
)

// UsingTemplate names the pools, of every tenant and node, whose
// sandboxes are made of template: the lifecycle service refuses to delete
// a template they use.
func (m *Manager) UsingTemplate(ctx context.Context, template string) ([]string, error) {
	rows, err := m.st.ListPools(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, row := range rows {
		var cfg Config
		if err := json.Unmarshal([]byte(row.Config), &cfg); err != nil {
			return nil, fmt.Errorf("pool %s: config: %w", row.Name, err)
		}
		if cfg.Template == template {
			out = append(out, row.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}
