package slots

import (
	"errors"
	"strings"
	"testing"
)

const sampleConfig = `
bootloader:
  type: uboot
  uboot:
    mirror: /boot/uboot-redund.env
slots:
  rootfs:
    a: {device: /dev/vda2, size: 512MiB}
    b: {device: /dev/vda3, size: 0x20000000}
  boot:
    a: {device: /srv/boot-a.img, type: file, size: 32M, verify: true}
    b: {device: /srv/boot-b.img, type: file, size: 33554432}
`

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(sampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Bootloader.UBoot
	if u.FwEnvConfig != DefaultFwEnvConfig || u.Scheme != SchemeRAUC || u.Tries != 3 || u.Mirror != "/boot/uboot-redund.env" {
		t.Errorf("uboot = %+v, want defaults with mirror", u)
	}
	if u.Parts["A"] != 2 || u.Parts["B"] != 3 {
		t.Errorf("parts = %v, want A:2 B:3", u.Parts)
	}
	if c.Paths.Cmdline != "/proc/cmdline" || c.Paths.Mountinfo != "/proc/self/mountinfo" || c.Paths.DevDisk != "/dev/disk" {
		t.Errorf("paths = %+v", c.Paths)
	}
	r := c.Classes["rootfs"]
	if r.A.Type != TypeBlock || r.A.Size != 512<<20 || r.B.Size != 512<<20 || r.A.BootName != "A" || r.B.BootName != "B" || r.A.Class != "rootfs" {
		t.Errorf("rootfs = %+v %+v", r.A, r.B)
	}
	if !*r.A.Verify {
		t.Errorf("block slot verify default = false, want true")
	}
	b := c.Classes["boot"]
	if !*b.A.Verify || *b.B.Verify {
		t.Errorf("file verify = %v %v, want true (explicit) false (default)", *b.A.Verify, *b.B.Verify)
	}
	if got := c.BootNames(); len(got) != 2 || got[0] != "A" || got[1] != "B" {
		t.Errorf("BootNames = %v", got)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml, field string
	}{
		{"no type", "slots: {r: {a: {device: /x}, b: {device: /y}}}", "bootloader.type"},
		{"bad type", "bootloader: {type: lilo}\nslots: {r: {a: {device: /x}, b: {device: /y}}}", "bootloader.type"},
		{"no slots", "bootloader: {type: uboot}", "slots"},
		{"missing b", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x}}}", "slots.r.b"},
		{"no device", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x}, b: {size: 1}}}", "slots.r.b.device"},
		{"slot type", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x, type: disk}, b: {device: /y}}}", "slots.r.a.type"},
		{"file size", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x, type: file}, b: {device: /y}}}", "slots.r.a.size"},
		{"dup device", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x}, b: {device: /x}}}", "slots.r.b.device"},
		{"dup boot name", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x, boot_name: B}, b: {device: /y}}}", "slots.r.b.boot_name"},
		{"classes disagree", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x}, b: {device: /y}}, s: {a: {device: /z, boot_name: X}, b: {device: /w}}}", "slots.s"},
		{"scheme", "bootloader: {type: uboot, uboot: {scheme: x}}\nslots: {r: {a: {device: /x}, b: {device: /y}}}", "bootloader.uboot.scheme"},
		{"one try", "bootloader: {type: uboot, uboot: {tries: 1}}\nslots: {r: {a: {device: /x}, b: {device: /y}}}", "bootloader.uboot.tries"},
		{"tries", "bootloader: {type: uboot, uboot: {tries: 12}}\nslots: {r: {a: {device: /x}, b: {device: /y}}}", "bootloader.uboot.tries"},
		{"size", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x, size: 12Q}, b: {device: /y}}}", "size"},
		{"unknown key", "bootloader: {type: uboot}\nslots: {r: {a: {device: /x, sise: 1}, b: {device: /y}}}", "sise"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("err = %v, want it to name %q", err, tt.field)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"4096", 4096, true}, {"0x1000", 4096, true}, {"4K", 4096, true}, {"4KiB", 4096, true},
		{"2M", 2 << 20, true}, {"1GiB", 1 << 30, true}, {"-1", 0, false}, {"M", 0, false}, {"1T", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestShippedConfigs(t *testing.T) {
	c, err := LoadConfig("../targets/armv7/slots.yaml")
	if err != nil {
		t.Fatal(err)
	}
	u := c.Bootloader.UBoot
	if c.Bootloader.Type != BootUBoot || u.Mirror != "/boot/uboot-redund.env" || u.Tries != 3 || u.Scheme != SchemeRAUC {
		t.Errorf("armv7 bootloader = %+v %+v", c.Bootloader, u)
	}
	if r := c.Classes["rootfs"]; r.A.Device != "/dev/vda2" || r.B.Device != "/dev/vda3" || r.B.BootName != "B" {
		t.Errorf("armv7 rootfs = %+v %+v", r.A, r.B)
	}
	copies, err := LoadFwEnvConfig("../targets/armv7/fw_env.config")
	if err != nil || len(copies) != 1 || copies[0] != (EnvCopy{Device: "/boot/uboot.env", Size: 0x4000}) {
		t.Errorf("armv7 fw_env.config = %+v, %v", copies, err)
	}
}
