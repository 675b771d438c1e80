package device

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/internal/gcflags"
)

const (
	benchSize   = 256 << 20
	benchRounds = 3
)

// genReader yields n deterministic pseudo-random (incompressible) bytes.
type genReader struct {
	rng *rand.ChaCha8
	n   int64
}

func (g *genReader) Read(b []byte) (int, error) {
	if g.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > g.n {
		b = b[:g.n]
	}
	g.rng.Read(b)
	g.n -= int64(len(b))
	return len(b), nil
}

// BenchmarkInstall installs a signed 256 MiB image bundle into a
// file-backed slot and reports install MiB/s against the same run's
// physical limit min(sha256 MiB/s, fsync'd sequential write MiB/s), with
// and without read-back verification; the peak RSS of an `autopatchd
// install` process doing the same; and the stripped linux/arm GOARM=7
// binary size.
func BenchmarkInstall(b *testing.B) {
	r := newRig(b)
	key := r.key
	bundlePath := filepath.Join(r.dir, "big.apb")
	f, err := os.Create(bundlePath)
	if err != nil {
		b.Fatal(err)
	}
	m := &bundle.Manifest{Name: "os", Version: "2.0.0", SecurityVersion: 1, Compatible: []string{hwID},
		Created: r.now.Unix(), Severity: bundle.SeverityNormal,
		Components: []bundle.Component{{Name: "rootfs", Kind: bundle.KindImage, Slot: "rootfs", Version: "2.0.0", Compression: bundle.CompressionNone}}}
	src := &genReader{rng: rand.NewChaCha8([32]byte{1}), n: benchSize}
	if err := bundle.Build(context.Background(), f, m, []io.Reader{src}, []crypto.Signer{key}, bundle.BuildOptions{TempDir: r.dir}); err != nil {
		b.Fatal(err)
	}
	// Synced, as a download is before it is installed: otherwise the first
	// install's fsyncs also wait for 256 MiB of the bundle's writeback.
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	f.Close()

	// The slot and the reference file exist at full size before the
	// first round, as a partition does, and every run overwrites them in
	// place: removing and re-creating them would add block allocation,
	// and on a file system mounted with discard the next fsync would also
	// wait for the freed blocks' discards, whichever run that is.
	slotPath, refPath := filepath.Join(r.dir, "rootfs-b.img"), filepath.Join(r.dir, "ref.img")
	for _, p := range []string{slotPath, refPath} {
		measureWrite(b, p, true)
	}
	// The machine may be shared: each rate is the best of benchRounds
	// rounds, the install and its physical references interleaved.
	var shaRate, writeRate, bufRate, directRate, hashingRate, hashing2Rate, readRate, installRate, verifyRate, busy float64
	for range benchRounds {
		shaRate = max(shaRate, measureSHA256())
		bufRate = max(bufRate, measureWrite(b, refPath, false))
		directRate = max(directRate, measureWrite(b, refPath, true))
		writeRate = max(bufRate, directRate)
		hashingRate = max(hashingRate, measureWriteHashing(b, refPath, 1))
		hashing2Rate = max(hashing2Rate, measureWriteHashing(b, refPath, runtime.NumCPU()))
		for _, verify := range []bool{false, true} {
			r.cfg.Verify = VerifyOff
			if verify {
				r.cfg.Verify = VerifyOn
			}
			os.RemoveAll(r.cfg.DataDir)
			os.MkdirAll(r.cfg.DataDir, 0o700)
			e := r.engine()
			runtime.GC()
			cpu0 := cpuSeconds()
			start := time.Now()
			out, err := r.install(e, bundlePath, InstallOptions{NoAdvance: true})
			if err != nil || out.Status != StatusWritten {
				b.Fatalf("Install = %+v, %v", out, err)
			}
			wall := time.Since(start).Seconds()
			rate := mib(benchSize) / wall
			if verify {
				verifyRate = max(verifyRate, rate)
			} else if rate > installRate {
				installRate = rate
				// Share of all cores the fastest install kept busy: near 1
				// means the install is bound by CPU work per byte, not by
				// hashing, reading and writing taking turns.
				busy = (cpuSeconds() - cpu0) / wall / float64(runtime.NumCPU())
			}
		}
		// The slot the installs left, read back after them: on this VM an
		// install started right after a full read of its slot ran slower
		// (the virtual disk's host side), a state no install on a device
		// starts from.
		readRate = max(readRate, measureRead(b, slotPath))
	}
	limit := min(shaRate, writeRate)
	b.ReportMetric(installRate, "install-MiB/s")
	b.ReportMetric(installRate/limit, "ratio")
	b.ReportMetric(busy, "cpu-busy")
	b.ReportMetric(verifyRate, "verify-install-MiB/s")
	b.ReportMetric(verifyRate/limit, "verify-ratio")
	// With read-back every byte is hashed twice (each chunk before it is
	// written, as SECURITY.md requires, and again when read back), which
	// on NumCPU cores allows sha256 × NumCPU / 2, and crosses the device
	// twice; where the device cannot read and write at once, that is its
	// limit.
	verifyLimit := shaRate * float64(runtime.NumCPU()) / 2
	if readRate > 0 {
		verifyLimit = min(verifyLimit, 1/(1/writeRate+1/readRate))
	}
	b.ReportMetric(readRate, "read-MiB/s")
	b.ReportMetric(verifyLimit, "verify-limit-MiB/s")
	b.ReportMetric(verifyRate/verifyLimit, "verify-limit-ratio")
	b.ReportMetric(shaRate, "sha256-MiB/s")
	b.ReportMetric(writeRate, "write-MiB/s")
	b.ReportMetric(bufRate, "write-buffered-MiB/s")
	b.ReportMetric(directRate, "write-direct-MiB/s")
	b.ReportMetric(limit, "limit-MiB/s")
	// The install hashes while it writes: where the storage slows down
	// while a core hashes (a VM's emulated disk sharing the host's cores),
	// min(sha256, that rate) is what hashing and writing at once can reach.
	b.ReportMetric(hashingRate, "write-while-hashing-MiB/s")
	// The same with every core hashing, as the install's verifiers do.
	b.ReportMetric(hashing2Rate, "write-while-all-hash-MiB/s")
	b.ReportMetric(installRate/min(shaRate, hashingRate), "ratio-while-hashing")

	// Built once, as `make cross` ships it, for this machine: a cgo build
	// would map the C library too (about 1.4 MiB more RSS) and is not what
	// runs on a device.
	bin := filepath.Join(r.dir, "autopatchd")
	if err := buildStatic("../cmd/autopatchd", bin); err != nil {
		b.Fatal(err)
	}
	rss, err := installRSS(b, r, bin, bundlePath, key, false)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rss, "peak-RSS-MiB")
	// With read-back, the default for block-device slots.
	rss, err = installRSS(b, r, bin, bundlePath, key, true)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rss, "peak-RSS-verify-MiB")
	size, err := armSize(b, "../cmd/autopatchd")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(size, "arm7-binary-MiB")
	// The floor under it: the libraries the daemon cannot do without
	// (TLS, MQTT, msgp, CBOR/COSE, zstd, YAML, slog, watchdog)
	// linked by a program with none of autopatchd's own code.
	floor, err := armSize(b, "./testdata/sizefloor")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(floor, "arm7-floor-MiB")
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// measureRead reads the slot back with O_DIRECT, as read-back does: the
// storage's read rate.
func measureRead(b *testing.B, path string) float64 {
	f, err := openDirectRead(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	buf, release, err := mmapBuf(1 << 20)
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	start := time.Now()
	var n int64
	for {
		m, err := f.ReadAt(buf, n)
		n += int64(m)
		if err != nil || m == 0 {
			break
		}
	}
	if n < benchSize {
		return 0
	}
	return mib(n) / time.Since(start).Seconds()
}

// measureSHA256 hashes 256 MiB from a 1 MiB buffer: the CPU's hashing rate.
func measureSHA256() float64 {
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{2}).Read(buf)
	h := sha256.New()
	start := time.Now()
	for range benchSize >> 20 {
		h.Write(buf)
	}
	h.Sum(nil)
	return mib(benchSize) / time.Since(start).Seconds()
}

// measureWrite writes 256 MiB sequentially in 1 MiB blocks and fsyncs: the
// storage's rate on the same file system as the slot. It writes exactly as
// slot writes do, through the page cache with early writeback or (direct)
// with O_DIRECT from aligned staging buffers; the reference is the faster
// of the two, the best this storage does rather than a naive
// write-then-fsync.
func measureWrite(b *testing.B, path string, direct bool) float64 {
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{3}).Read(buf)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644) // in place, see BenchmarkInstall
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	w := newFlushWriterMode(f, nil, direct)
	for range benchSize >> 20 {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return mib(benchSize) / time.Since(start).Seconds()
}

// measureWriteHashing is measureWrite (O_DIRECT) while n goroutines
// hash without pause, as an install's verifiers do (with n > 1 also with
// the install's spare P): the storage's rate while the cores are busy
// with sha256. On a VM whose virtual disk is emulated on the same host
// cores, it can be well below the idle rate.
func measureWriteHashing(b *testing.B, path string, n int) float64 {
	if n > 1 {
		defer spareProc()()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			h := sha256.New()
			for {
				select {
				case <-stop:
					return
				default:
					h.Write(buf)
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	return measureWrite(b, path, true)
}

// installRSS builds autopatchd, runs `autopatchd install` of the bundle on
// a config with the simulated bootloader (and read-back on or off), and
// returns its peak RSS in MiB.
func installRSS(b *testing.B, r *rig, bin, bundlePath string, key crypto.Signer, verify bool) (float64, error) {
	pubPEM, err := bundle.MarshalPublicKey(key.Public())
	if err != nil {
		return 0, err
	}
	pubPath := filepath.Join(r.dir, "vendor.pub")
	if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		return 0, err
	}
	slotsPath := filepath.Join(r.dir, "slots.yaml")
	os.WriteFile(slotsPath, []byte(fmt.Sprintf(`
bootloader:
  type: sim
  sim: {dir: %[1]s/cli-sim}
slots:
  rootfs:
    a: {device: %[1]s/rootfs-a.img, type: file, size: 512M}
    b: {device: %[1]s/rootfs-b.img, type: file, size: 512M}
`, r.dir)), 0o644)
	// A fresh data dir and simulated bootloader for each run: the bundle is
	// installed, not found already pending.
	data := filepath.Join(r.dir, "cli-data")
	os.RemoveAll(data)
	os.RemoveAll(filepath.Join(r.dir, "cli-sim"))
	mode := map[bool]string{false: "off", true: "on"}[verify]
	cfgPath := filepath.Join(r.dir, "device.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
slots: %s
hardware_id: %s
trust: {keys: [%s]}
verify: %s
reboot: {policy: hub}
hooks: {dir: %s/hooks}
`, data, slotsPath, hwID, pubPath, mode, r.dir)), 0o644)
	// Go starts children with vfork, and Linux then records the parent's
	// peak RSS as the child's starting maxrss. This process has held far
	// more than autopatchd will, so a fresh copy of the test binary (a few
	// MiB) starts autopatchd and reports its rusage.
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), rssHelperEnv+"="+bin+"\x1f-c\x1f"+cfgPath+"\x1finstall\x1f"+bundlePath)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("autopatchd install: %v: %s", err, out)
	}
	var kib int64
	if _, err := fmt.Sscanf(string(out), "maxrss-kib %d", &kib); err != nil {
		return 0, fmt.Errorf("rss helper said %q", out)
	}
	return float64(kib) / 1024, nil
}

const rssHelperEnv = "AUTOPATCHD_RSS_HELPER"

// TestMain turns the test binary into the RSS helper when asked to.
func TestMain(m *testing.M) {
	if v := os.Getenv(rssHelperEnv); v != "" {
		args := strings.Split(v, "\x1f")
		cmd := exec.Command(args[0], args[1:]...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			fmt.Printf("error %v: %s", err, out)
			os.Exit(1)
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		fmt.Printf("maxrss-kib %d\n", ru.Maxrss) // KiB on Linux
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// armSize builds the stripped linux/arm GOARM=7 binary of pkg the way
// `make cross` builds autopatchd and returns its size in MiB.
func armSize(b *testing.B, pkg string) (float64, error) {
	out := filepath.Join(b.TempDir(), "arm-binary")
	if err := buildStatic(pkg, out, "GOOS=linux", "GOARCH=arm", "GOARM=7"); err != nil {
		return 0, err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return 0, err
	}
	return mib(fi.Size()), nil
}

// buildStatic builds pkg into out as `make cross` builds autopatchd:
// static (CGO_ENABLED=0), stripped, with the compiler flags of
// scripts/autopatchd.gcflags; env adds GOOS, GOARCH and the like.
func buildStatic(pkg, out string, env ...string) error {
	flags, err := gcflags.Read("../scripts/autopatchd.gcflags")
	if err != nil {
		return err
	}
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w"}, flags...)
	cmd := exec.Command("go", append(args, "-o", out, pkg)...)
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s %s: %v: %s", strings.Join(env, " "), pkg, err, o)
	}
	return nil
}

// cpuSeconds is the user and system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
