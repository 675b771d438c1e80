package bundle

import (
	"fmt"
	"slices"
	"strings"
)

// InstallOrder returns component indexes in an order where every component
// comes after the components of this bundle it depends on (stable: manifest
// order where dependencies allow). A dependency cycle is an error naming it.
func (m *Manifest) InstallOrder() ([]int, error) {
	idx := make(map[string]int, len(m.Components))
	for i, c := range m.Components {
		idx[c.Name] = i
	}
	const (
		unvisited = iota
		visiting
		done
	)
	state := make([]int, len(m.Components))
	var order []int
	var path []string
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case done:
			return nil
		case visiting:
			start := slices.Index(path, m.Components[i].Name)
			cycle := append(slices.Clone(path[start:]), m.Components[i].Name)
			return fmt.Errorf("dependency cycle %s: %w", strings.Join(cycle, " -> "), ErrMalformed)
		}
		state[i] = visiting
		path = append(path, m.Components[i].Name)
		for _, d := range m.Components[i].Depends {
			if j, ok := idx[d.Name]; ok {
				if err := visit(j); err != nil {
					return err
				}
			}
		}
		path = path[:len(path)-1]
		state[i] = done
		order = append(order, i)
		return nil
	}
	for i := range m.Components {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return order, nil
}
