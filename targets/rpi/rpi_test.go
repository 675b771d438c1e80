// Package rpi_test checks the Raspberry Pi board files against each other
// and against the slots package: the slot config loads, the autoboot.txt
// template is what the tryboot backend writes, the partition script builds
// the layout the config names, and the initramfs script maps boot
// partitions to root slots.
package rpi_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/autopatcher/autopatcher/slots"
)

func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (Debian package %s) is required under CI", name, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return p
}

func TestSlotConfig(t *testing.T) {
	cfg, err := slots.LoadConfig("slots.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bootloader.Type != slots.BootTryboot {
		t.Fatalf("bootloader type %q, want tryboot", cfg.Bootloader.Type)
	}
	tc := cfg.Bootloader.Tryboot
	if tc.BootPartitions["A"] != 2 || tc.BootPartitions["B"] != 3 {
		t.Errorf("boot_partitions = %v, want A: 2, B: 3", tc.BootPartitions)
	}
	want := map[string]string{
		"boot/A": "/dev/mmcblk0p2", "boot/B": "/dev/mmcblk0p3",
		"rootfs/A": "/dev/mmcblk0p5", "rootfs/B": "/dev/mmcblk0p6",
	}
	for key, dev := range want {
		class, name, _ := strings.Cut(key, "/")
		cl, err := cfg.Class(class)
		if err != nil {
			t.Fatal(err)
		}
		s, err := cl.Slot(name)
		if err != nil {
			t.Fatal(err)
		}
		if s.Device != dev {
			t.Errorf("%s device = %s, want %s", key, s.Device, dev)
		}
	}
	// Boot partition numbers in the config are the boot slots' partitions.
	for name, part := range tc.BootPartitions {
		cl, _ := cfg.Class("boot")
		s, _ := cl.Slot(name)
		if !strings.HasSuffix(s.Device, "p"+strconv.Itoa(part)) {
			t.Errorf("boot slot %s is %s, but boot_partitions says %d", name, s.Device, part)
		}
	}
	// The config opens as the tryboot backend.
	if _, err := slots.Open(cfg); err != nil {
		t.Errorf("Open: %v", err)
	}
}

func TestAutobootTemplate(t *testing.T) {
	b, err := os.ReadFile("autoboot.txt")
	if err != nil {
		t.Fatal(err)
	}
	a, err := slots.ParseAutoboot(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (slots.Autoboot{TrybootAB: true, Partition: 2, Tryboot: 3}); a != want {
		t.Errorf("autoboot.txt = %+v, want %+v", a, want)
	}
	if string(a.Bytes()) != string(b) {
		t.Errorf("autoboot.txt is not in the form the backend writes:\n%q\n%q", b, a.Bytes())
	}
}

func TestPartitionLayout(t *testing.T) {
	sfdisk := tool(t, "sfdisk", "fdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<30); err != nil { // sparse 8 GiB card
		t.Fatal(err)
	}
	script, err := os.Open("partitions.sfdisk")
	if err != nil {
		t.Fatal(err)
	}
	defer script.Close()
	cmd := exec.Command(sfdisk, "--no-reread", "--no-tell-kernel", img)
	cmd.Stdin = script
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	out, err := exec.Command(sfdisk, "--json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var pt struct {
		PartitionTable struct {
			Label      string `json:"label"`
			ID         string `json:"id"`
			Partitions []struct {
				Node  string `json:"node"`
				Start int64  `json:"start"`
				Size  int64  `json:"size"`
				Type  string `json:"type"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatal(err)
	}
	if pt.PartitionTable.Label != "dos" || pt.PartitionTable.ID != "0x4150a7c4" {
		t.Errorf("label %s id %s, want dos 0x4150a7c4 (cmdline.txt autopatcher.disk=)", pt.PartitionTable.Label, pt.PartitionTable.ID)
	}
	want := []struct {
		typ  string
		size int64 // sectors; 0 = the rest
	}{
		{"e", 32 << 11}, {"c", 256 << 11}, {"c", 256 << 11}, {"5", 0},
		{"83", 2 << 21}, {"83", 2 << 21}, {"83", 0},
	}
	parts := pt.PartitionTable.Partitions
	if len(parts) != len(want) {
		t.Fatalf("%d partitions, want %d", len(parts), len(want))
	}
	for i, w := range want {
		p := parts[i]
		if p.Type != w.typ || (w.size != 0 && p.Size != w.size) {
			t.Errorf("partition %d: type %s size %d, want type %s size %d", i+1, p.Type, p.Size, w.typ, w.size)
		}
		if i < 4 && p.Start%8192 != 0 {
			t.Errorf("primary %d starts at sector %d, not on a 4 MiB boundary", i+1, p.Start)
		}
	}
	if data := parts[6].Size; data < 1<<21 {
		t.Errorf("data partition is %d sectors on an 8 GiB card", data)
	}
	cmdline, _ := os.ReadFile(filepath.Join("boot", "cmdline.txt"))
	if !strings.Contains(string(cmdline), "autopatcher.disk="+strings.TrimPrefix(pt.PartitionTable.ID, "0x")) {
		t.Errorf("cmdline.txt %q does not name disk %s", cmdline, pt.PartitionTable.ID)
	}
}

// TestBootselImage builds the bootsel FAT16 file system with the
// template, as the image recipe does, and reads autoboot.txt back.
func TestBootselImage(t *testing.T) {
	mkfs := tool(t, "mkfs.vfat", "dosfstools")
	mcopy := tool(t, "mcopy", "mtools")
	img := filepath.Join(t.TempDir(), "bootsel.vfat")
	if out, err := exec.Command(mkfs, "-F", "16", "-n", "BOOTSEL", "-C", img, "32768").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v\n%s", err, out)
	}
	if out, err := exec.Command(mcopy, "-i", img, "autoboot.txt", "::autoboot.txt").CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
	out, err := exec.Command(mcopy, "-i", img, "::autoboot.txt", "-").Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slots.ParseAutoboot(out); err != nil {
		t.Errorf("autoboot.txt read back from FAT: %v", err)
	}
}

// TestInitramfsSlot runs the local-top script with a fake device tree.
func TestInitramfsSlot(t *testing.T) {
	sh := tool(t, "sh", "dash")
	tool(t, "od", "coreutils")
	const cmdline = "console=serial0,115200 autopatcher.disk=4150a7c4 rootwait ro"
	tests := []struct {
		name      string
		partition []byte
		cmdline   string
		ok        bool
		param     string
		out       string
	}{
		{"boot A", []byte{0, 0, 0, 2}, cmdline, true, "ROOT=PARTUUID=4150a7c4-05\n",
			cmdline + " autopatcher.slot=A root=PARTUUID=4150a7c4-05\n"},
		{"boot B", []byte{0, 0, 0, 3}, cmdline, true, "ROOT=PARTUUID=4150a7c4-06\n",
			cmdline + " autopatcher.slot=B root=PARTUUID=4150a7c4-06\n"},
		{"bootsel partition", []byte{0, 0, 0, 1}, cmdline, false, "", ""},
		{"little endian", []byte{3, 0, 0, 0}, cmdline, false, "", ""},
		{"short", []byte{0, 3}, cmdline, false, "", ""},
		{"missing", nil, cmdline, false, "", ""},
		{"no disk id", []byte{0, 0, 0, 2}, "console=tty1", false, "", ""},
		{"bad disk id", []byte{0, 0, 0, 2}, "autopatcher.disk=4150A7C4", false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dt := filepath.Join(dir, "dt")
			os.Mkdir(dt, 0o755)
			if tt.partition != nil {
				os.WriteFile(filepath.Join(dt, "partition"), tt.partition, 0o444)
			}
			os.WriteFile(filepath.Join(dir, "cmdline"), []byte(tt.cmdline+"\n"), 0o444)
			cmd := exec.Command(sh, filepath.Join("initramfs", "autopatcher-slot"))
			cmd.Env = append(os.Environ(),
				"AP_DT="+dt, "AP_CONF="+filepath.Join(dir, "param.conf"),
				"AP_RUN="+filepath.Join(dir, "run"), "AP_CMDLINE="+filepath.Join(dir, "cmdline"))
			out, err := cmd.CombinedOutput()
			if (err == nil) != tt.ok {
				t.Fatalf("exit error %v, want ok=%v; output %s", err, tt.ok, out)
			}
			param, _ := os.ReadFile(filepath.Join(dir, "param.conf"))
			if string(param) != tt.param {
				t.Errorf("param.conf = %q, want %q", param, tt.param)
			}
			got, _ := os.ReadFile(filepath.Join(dir, "run", "cmdline"))
			if string(got) != tt.out {
				t.Errorf("run/cmdline = %q, want %q", got, tt.out)
			}
			if tt.ok {
				// autopatchd's view: the slot named there is the one booted.
				if s, err := slots.Booted(string(got)); err != nil || s != map[byte]string{2: "A", 3: "B"}[tt.partition[3]] {
					t.Errorf("slots.Booted = %q, %v", s, err)
				}
			}
		})
	}
	// The prereqs call initramfs-tools makes must print nothing and succeed.
	if out, err := exec.Command(sh, filepath.Join("initramfs", "autopatcher-slot"), "prereqs").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("prereqs: %v %q", err, out)
	}
}
