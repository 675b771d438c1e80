package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/autopatcher/autopatcher/e2e/disk"
	"github.com/autopatcher/autopatcher/slots"
)

// TestBoardFilesAgree checks that boot.cmd, fw_env.config, slots.yaml and
// the disk layout describe the same env files, sizes, tries and partitions:
// the place where U-Boot and Linux usually start to disagree.
func TestBoardFilesAgree(t *testing.T) {
	dir := filepath.Join("..", "targets", "armv7")
	script, err := os.ReadFile(filepath.Join(dir, "boot.cmd"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := string(script)
	fwEnv, err := os.ReadFile(filepath.Join(dir, "fw_env.config"))
	if err != nil {
		t.Skipf("targets/armv7/fw_env.config not there: %v", err)
	}
	cfg, err := slots.LoadConfig(filepath.Join(dir, "slots.yaml"))
	if err != nil {
		t.Fatalf("load slots.yaml: %v", err)
	}

	var envLine []string
	for _, l := range strings.Split(string(fwEnv), "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			envLine = f
		}
	}
	if len(envLine) != 3 {
		t.Fatalf("fw_env.config: want one line 'file offset size', got %q", envLine)
	}
	scriptSize := regexp.MustCompile(`setenv ap_envsize (0x[0-9a-fA-F]+)`).FindStringSubmatch(cmd)
	u := cfg.Bootloader.UBoot
	tests := []struct {
		what      string
		got, want string
	}{
		{"bootloader type", cfg.Bootloader.Type, "uboot"},
		{"fw_env.config primary file", envLine[0], "/boot/uboot.env"},
		{"fw_env.config offset", envLine[1], "0x0000"},
		{"fw_env.config size vs boot.cmd ap_envsize", strings.ToLower(envLine[2]), strings.ToLower(at(scriptSize, 1))},
		{"slots.yaml mirror", u.Mirror, "/boot/uboot-redund.env"},
		{"slots.yaml scheme", u.Scheme, "rauc"},
		{"slot A device (partition 2 = ap_part 2)", cfg.Classes["rootfs"].A.Device, "/dev/vda2"},
		{"slot B device (partition 3 = ap_part 3)", cfg.Classes["rootfs"].B.Device, "/dev/vda3"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.what, tt.got, tt.want)
		}
	}
	for _, want := range []string{
		"uboot.env ${ap_envsize}", "uboot-redund.env ${ap_envsize}",
		"setenv ap_slot A\n\t\t\t\tsetenv ap_part 2", "setenv ap_slot B\n\t\t\t\tsetenv ap_part 3",
		"setenv BOOT_A_LEFT " + strconv.Itoa(u.Tries), "setenv BOOT_B_LEFT " + strconv.Itoa(u.Tries),
		"autopatcher.slot=${ap_slot}", "rauc.slot=${ap_slot}",
	} {
		if !strings.Contains(cmd, want) {
			t.Errorf("boot.cmd does not contain %q", want)
		}
	}
	// The redundant copy is written before the primary.
	if r, p := strings.Index(cmd, "fatwrite ${ap_dev} ${ap_devnum}:1 ${ap_env} uboot-redund.env"), strings.Index(cmd, "fatwrite ${ap_dev} ${ap_devnum}:1 ${ap_env} uboot.env"); r < 0 || p < 0 || r > p {
		t.Errorf("boot.cmd must fatwrite uboot-redund.env before uboot.env (positions %d, %d)", r, p)
	}
	parts := disk.Layout()
	for i, name := range []string{disk.PartBoot, disk.PartSlotA, disk.PartSlotB, disk.PartData} {
		if parts[i].Name != name {
			t.Errorf("disk layout partition %d: got %s, want %s", i+1, parts[i].Name, name)
		}
	}
}

func at(m []string, i int) string {
	if len(m) > i {
		return m[i]
	}
	return ""
}
