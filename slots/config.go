package slots

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Slot types.
const (
	TypeBlock = "block" // a raw block device (partition)
	TypeFile  = "file"  // a regular file, written like a device
	TypeDir   = "dir"   // a directory (packages, files), never written by Target
)

// Bootloader types understood by Open.
const (
	BootUBoot   = "uboot"
	BootTryboot = "tryboot"
	BootGrub    = "grub"
	BootSim     = "sim"
)

// U-Boot variable schemes.
const (
	SchemeRAUC   = "rauc"
	SchemeMender = "mender"
)

// Defaults of the config fields; doc.go lists them with the YAML keys.
const (
	DefaultFwEnvConfig = "/etc/fw_env.config"
	DefaultTries       = 3
	DefaultCmdline     = "/proc/cmdline"
	DefaultMountinfo   = "/proc/self/mountinfo"
	DefaultDevDisk     = "/dev/disk"
	DefaultSys         = "/sys"
)

// ErrConfig is wrapped by every config validation error.
var ErrConfig = errors.New("slots: invalid config")

// Config describes a board: its bootloader and its A/B slot classes.
type Config struct {
	Bootloader BootloaderConfig `yaml:"bootloader"`
	// Classes maps a class name (rootfs, boot, firmware, …) to its pair.
	Classes map[string]*Class `yaml:"slots"`
	// Paths of kernel interfaces, injectable for tests.
	Paths Paths `yaml:"paths"`
}

// Paths are the system files slots reads; tests point them at fakes.
type Paths struct {
	Cmdline   string `yaml:"cmdline"`   // default /proc/cmdline
	Mountinfo string `yaml:"mountinfo"` // default /proc/self/mountinfo
	DevDisk   string `yaml:"dev_disk"`  // default /dev/disk (by-partuuid, by-uuid links)
	Sys       string `yaml:"sys"`       // default /sys (loop devices' backing files)
}

// BootloaderConfig selects and configures the boot-selection backend.
// Exactly the sub-struct named by Type is used; the others are ignored.
type BootloaderConfig struct {
	Type    string         `yaml:"type"` // uboot | tryboot | grub | sim
	UBoot   *UBootConfig   `yaml:"uboot,omitempty"`
	Tryboot *TrybootConfig `yaml:"tryboot,omitempty"`
	Grub    *GrubConfig    `yaml:"grub,omitempty"`
	Sim     *SimConfig     `yaml:"sim,omitempty"`
}

// UBootConfig configures the U-Boot environment backend.
type UBootConfig struct {
	// FwEnvConfig is the fw_env.config file giving env location and size.
	FwEnvConfig string `yaml:"fw_env_config"` // default /etc/fw_env.config
	// Mirror, if set, turns on the mirrored-files mode: the single copy
	// named in FwEnvConfig is the primary file and Mirror the second file.
	Mirror string `yaml:"mirror"` // default "" (off)
	// Scheme is the variable scheme: rauc (BOOT_ORDER, BOOT_x_LEFT) or mender.
	Scheme string `yaml:"scheme"` // default rauc
	// Tries is the number of boot attempts a committed slot gets (rauc).
	Tries int `yaml:"tries"` // default 3
	// Parts maps a boot name to its mender_boot_part value (mender).
	Parts map[string]int `yaml:"parts"` // default A: 2, B: 3
}

// TrybootConfig configures the Raspberry Pi tryboot backend.
type TrybootConfig struct {
	AutobootPath    string         `yaml:"autoboot_path"`
	DeviceTreeDir   string         `yaml:"device_tree_dir"`
	RebootParamPath string         `yaml:"reboot_param_path"`
	BootPartitions  map[string]int `yaml:"boot_partitions"`
}

// GrubConfig configures the GRUB environment block backend.
type GrubConfig struct {
	EnvPath string `yaml:"env_path"`
}

// SimConfig configures the file-backed simulator.
type SimConfig struct {
	Dir string `yaml:"dir"`
}

// Class is one A/B pair of slots.
type Class struct {
	Name string `yaml:"-"` // the key in Config.Classes
	A    *Slot  `yaml:"a"`
	B    *Slot  `yaml:"b"`
}

// Slot is one side of a class.
type Slot struct {
	Class    string `yaml:"-"`         // class name, filled by validation
	Device   string `yaml:"device"`    // path of the device, file or directory
	Type     string `yaml:"type"`      // block | file | dir; default block
	Size     Size   `yaml:"size"`      // bytes; 0 = the block device's size; required for file
	BootName string `yaml:"boot_name"` // default "A" for a, "B" for b
	// Verify turns the read-back sha256 check on or off; default on for
	// block devices, off for files.
	Verify *bool `yaml:"verify"`
}

// Size is a byte count; YAML accepts an integer or a string with a suffix
// K, M, G (or KiB, MiB, GiB), all powers of 1024, and 0x hex.
type Size int64

// UnmarshalYAML parses an integer or a suffixed size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSize parses "4096", "0x1000", "512M", "512MiB", "1G".
func ParseSize(str string) (Size, error) {
	t := strings.TrimSpace(str)
	mult := int64(1)
	for _, suf := range []struct {
		s string
		m int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(t, suf.s) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, suf.s)), suf.m
			break
		}
	}
	v, err := strconv.ParseInt(t, 0, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("parse size %q: not a byte count", str)
	}
	return Size(v * mult), nil
}

// LoadConfig reads and validates a YAML slot config.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load slot config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("load slot config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes YAML, fills defaults and validates. Unknown keys are
// errors, so a typo never silently falls back to a default.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func fieldErr(field, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, a...))
}

// Validate fills defaults in place and checks every field.
func (c *Config) Validate() error {
	if c.Paths.Cmdline == "" {
		c.Paths.Cmdline = DefaultCmdline
	}
	if c.Paths.Mountinfo == "" {
		c.Paths.Mountinfo = DefaultMountinfo
	}
	if c.Paths.DevDisk == "" {
		c.Paths.DevDisk = DefaultDevDisk
	}
	if c.Paths.Sys == "" {
		c.Paths.Sys = DefaultSys
	}
	if err := c.Bootloader.validate(); err != nil {
		return err
	}
	if len(c.Classes) == 0 {
		return fieldErr("slots", "no slot classes")
	}
	names := map[string]string{}
	for _, name := range c.ClassNames() {
		cl := c.Classes[name]
		f := "slots." + name
		if name == "" || strings.ContainsAny(name, " \t/") {
			return fieldErr(f, "bad class name %q", name)
		}
		if cl == nil {
			return fieldErr(f, "empty class")
		}
		cl.Name = name
		for i, s := range []*Slot{cl.A, cl.B} {
			side := [2]string{"a", "b"}[i]
			sf := f + "." + side
			if s == nil {
				return fieldErr(sf, "missing")
			}
			s.Class = name
			if s.BootName == "" {
				s.BootName = strings.ToUpper(side)
			}
			if err := s.validate(sf); err != nil {
				return err
			}
			if prev, ok := names[s.Device]; ok {
				return fieldErr(sf+".device", "%s also used by %s", s.Device, prev)
			}
			names[s.Device] = sf
		}
		if cl.A.BootName == cl.B.BootName {
			return fieldErr(f+".b.boot_name", "same as a (%q)", cl.A.BootName)
		}
		if first := c.BootNames(); !(first[0] == cl.A.BootName && first[1] == cl.B.BootName) {
			return fieldErr(f, "boot names %s/%s differ from %s/%s of the other classes", cl.A.BootName, cl.B.BootName, first[0], first[1])
		}
	}
	return nil
}

func (s *Slot) validate(f string) error {
	if s.Device == "" {
		return fieldErr(f+".device", "required")
	}
	if s.Type == "" {
		s.Type = TypeBlock
	}
	switch s.Type {
	case TypeBlock:
	case TypeFile:
		if s.Size == 0 {
			return fieldErr(f+".size", "required for type file")
		}
	case TypeDir:
	default:
		return fieldErr(f+".type", "%q is not block, file or dir", s.Type)
	}
	if s.Size < 0 {
		return fieldErr(f+".size", "negative")
	}
	if strings.ContainsAny(s.BootName, " \t\"'=") {
		return fieldErr(f+".boot_name", "%q has spaces, quotes or '='", s.BootName)
	}
	if s.Verify == nil {
		v := s.Type == TypeBlock
		s.Verify = &v
	}
	return nil
}

func (b *BootloaderConfig) validate() error {
	switch b.Type {
	case BootUBoot:
		if b.UBoot == nil {
			b.UBoot = &UBootConfig{}
		}
		return b.UBoot.validate()
	case BootTryboot:
		if b.Tryboot == nil {
			b.Tryboot = &TrybootConfig{}
		}
	case BootGrub:
		if b.Grub == nil {
			b.Grub = &GrubConfig{}
		}
	case BootSim:
		if b.Sim == nil {
			b.Sim = &SimConfig{}
		}
	case "":
		return fieldErr("bootloader.type", "required (uboot, tryboot, grub or sim)")
	default:
		registryMu.Lock()
		_, ok := registry[b.Type]
		registryMu.Unlock()
		if !ok {
			return fieldErr("bootloader.type", "unknown type %q", b.Type)
		}
	}
	return nil
}

func (u *UBootConfig) validate() error {
	if u.FwEnvConfig == "" {
		u.FwEnvConfig = DefaultFwEnvConfig
	}
	if u.Scheme == "" {
		u.Scheme = SchemeRAUC
	}
	if u.Scheme != SchemeRAUC && u.Scheme != SchemeMender {
		return fieldErr("bootloader.uboot.scheme", "%q is not rauc or mender", u.Scheme)
	}
	if u.Tries == 0 {
		u.Tries = DefaultTries
	}
	if u.Tries < 2 || u.Tries > 9 {
		// The boot script counts with setexpr, which is hex: keep to one
		// digit. One try is what marks a trial (Try), so a committed slot
		// needs at least two.
		return fieldErr("bootloader.uboot.tries", "%d not in 2..9", u.Tries)
	}
	if u.Parts == nil {
		u.Parts = map[string]int{"A": 2, "B": 3}
	}
	for k, v := range u.Parts {
		if v <= 0 {
			return fieldErr("bootloader.uboot.parts."+k, "partition %d must be positive", v)
		}
	}
	return nil
}

// ClassNames returns the class names in sorted order.
func (c *Config) ClassNames() []string {
	names := make([]string, 0, len(c.Classes))
	for n := range c.Classes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Class returns the named class or an error naming it.
func (c *Config) Class(name string) (*Class, error) {
	cl, ok := c.Classes[name]
	if !ok || cl == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoClass, name)
	}
	return cl, nil
}

// Slot returns the slot of class with the given boot name.
func (cl *Class) Slot(bootName string) (*Slot, error) {
	switch bootName {
	case cl.A.BootName:
		return cl.A, nil
	case cl.B.BootName:
		return cl.B, nil
	}
	return nil, fmt.Errorf("%w: %q in class %s", ErrNoSlot, bootName, cl.Name)
}

// Other returns the slot of the class that is not bootName.
func (cl *Class) Other(bootName string) (*Slot, error) {
	switch bootName {
	case cl.A.BootName:
		return cl.B, nil
	case cl.B.BootName:
		return cl.A, nil
	}
	return nil, fmt.Errorf("%w: %q in class %s", ErrNoSlot, bootName, cl.Name)
}

// BootNames returns the boot names of the first class (sorted by name), in
// A, B order: the names the bootloader knows.
func (c *Config) BootNames() []string {
	for _, n := range c.ClassNames() {
		cl := c.Classes[n]
		return []string{cl.A.BootName, cl.B.BootName}
	}
	return nil
}

// Sentinel errors for lookups.
var (
	ErrNoClass = errors.New("slots: no such slot class")
	ErrNoSlot  = errors.New("slots: no such slot")
)
