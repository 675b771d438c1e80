package slots

import (
	"errors"
	"fmt"
	"sync"
)

// ErrUnknownBootloader is returned by Open for a type nobody registered.
var ErrUnknownBootloader = errors.New("slots: unknown bootloader type")

// Constructor builds a Bootloader from a validated config.
type Constructor func(cfg *Config) (Bootloader, error)

var (
	registryMu sync.Mutex
	registry   = map[string]Constructor{}
)

// Register makes a bootloader type available to Open. Packages that slots
// cannot import (slots/sim imports slots) call it from their init:
//
//	func init() { slots.Register("sim", func(c *slots.Config) (slots.Bootloader, error) { return New(c.Bootloader.Sim.Dir) }) }
//
// A later registration of the same type replaces the earlier one.
func Register(typ string, c Constructor) {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry[typ] = c
}

// Open builds the bootloader named by cfg.Bootloader.Type. The types of
// this package register themselves; any other type (sim) must be
// registered by its package.
func Open(cfg *Config) (Bootloader, error) {
	if cfg == nil {
		return nil, fmt.Errorf("open bootloader: %w: nil config", ErrConfig)
	}
	if err := cfg.Bootloader.validate(); err != nil {
		return nil, fmt.Errorf("open bootloader: %w", err)
	}
	registryMu.Lock()
	c, ok := registry[cfg.Bootloader.Type]
	registryMu.Unlock()
	if ok {
		return c(cfg)
	}
	return nil, fmt.Errorf("open bootloader: %w: %q (sim needs a blank import of slots/sim)", ErrUnknownBootloader, cfg.Bootloader.Type)
}
