package sim

import (
	"fmt"

	"github.com/autopatcher/autopatcher/slots"
)

// A blank import of this package makes bootloader type "sim" available to
// slots.Open, with bootloader.sim.dir as the state directory.
func init() {
	slots.Register(slots.BootSim, func(c *slots.Config) (slots.Bootloader, error) {
		if c.Bootloader.Sim == nil || c.Bootloader.Sim.Dir == "" {
			return nil, fmt.Errorf("open sim bootloader: %w: bootloader.sim.dir: required", slots.ErrConfig)
		}
		var opts []Option
		if names := c.BootNames(); len(names) > 0 {
			opts = append(opts, WithSlots(names...))
		}
		return New(c.Bootloader.Sim.Dir, opts...)
	})
}
