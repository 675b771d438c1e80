package slots

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkSlotWrite streams 256 MiB into a file-backed slot with fsync,
// with and without the read-back sha256 check, and compares each with dd
// of the same bytes on the same disk in the same run. The reference is a
// plain `dd if=SRC of=DST bs=4M conv=fsync,notrunc` (ratio, verify-ratio: goal
// ≥ 0.90); since the writer uses O_DIRECT where it can, the same dd with
// oflag=direct is reported too, and the *-direct ratios compare with the
// faster of the two dd runs. Each variant runs three times per iteration;
// the fastest run counts. Both variants hash every byte once (the input
// against sum, or the read-back) on one core, while dd hashes nothing:
// hash-ceiling = min(1, sha256/dd) is the best ratio this machine allows.
// The read-back also moves every byte over the device a second time:
// verify-ceiling = plain dd / max(sha256, fastest dd + dd-read) is the
// best verify-ratio of a device that cannot read and write at once
// (dd-read: `dd iflag=direct` of the written slot), and verify-ceiling-
// direct the same against the faster dd. Whether the device can is
// measured too: duplex = (dd-direct + dd-read) / both run at once, 1 for
// a device that reads and writes from one bandwidth, up to 2 for one that
// does both at full speed.
func BenchmarkSlotWrite(b *testing.B) {
	const size = 256 << 20
	dd, err := exec.LookPath("dd")
	if err != nil {
		b.Skip("dd not found (coreutils)")
	}
	dir := b.TempDir()
	src := filepath.Join(dir, "src.img")
	data := randBytes(size, 42)
	sum := sha256.Sum256(data)
	// Synced, so that the inputs' writeback does not compete with the
	// runs being measured (a plain dd measured while 256 MiB of input are
	// still dirty runs at half speed).
	if err := ReplaceFile(src, data, 0o644, nil); err != nil {
		b.Fatal(err)
	}
	// The CPU's sha256 speed over as many bytes, measured in every round
	// like the rest: where it is not far above dd's, hashing (not the
	// device) bounds the writer, and the ratios show it.
	// Hashed as the writer hashes: 4 MiB blocks still in the CPU's cache.
	runHash := func() time.Duration {
		blk := data[:4<<20]
		start := time.Now()
		h := sha256.New()
		for range size / len(blk) {
			h.Write(blk)
		}
		h.Sum(nil)
		return time.Since(start)
	}
	// The slot exists at full size, as a partition does, and every run
	// overwrites it in place (dd conv=notrunc). Removing and re-creating
	// it for each run would add block allocation, and on a file system
	// mounted with discard the next fsync would also wait for the freed
	// blocks' discards: plain dd then ranged 481-1285 MiB/s between runs.
	dst := filepath.Join(dir, "slot.img")
	if err := ReplaceFile(dst, data, 0o644, nil); err != nil {
		b.Fatal(err)
	}
	runDD := func(direct bool) time.Duration {
		args := []string{"if=" + src, "of=" + dst, "bs=4M", "conv=fsync,notrunc", "status=none"}
		if direct {
			args = append(args, "oflag=direct")
		}
		start := time.Now()
		out, err := exec.Command(dd, args...).CombinedOutput()
		if err != nil {
			b.Fatalf("dd: %v: %s", err, out)
		}
		return time.Since(start)
	}
	// Reading the slot back with O_DIRECT: a read-back moves every byte
	// over the device twice, dd once.
	runRead := func() time.Duration {
		start := time.Now()
		out, err := exec.Command(dd, "if="+dst, "of=/dev/null", "bs=4M", "iflag=direct", "status=none").CombinedOutput()
		if err != nil {
			b.Fatalf("dd read: %v: %s", err, out)
		}
		return time.Since(start)
	}
	// A write and a read of the disk at once (dd oflag=direct into the
	// slot, dd iflag=direct of another file of the same size): whether
	// this disk can overlap the read-back with the writes at all.
	other := filepath.Join(dir, "other.img")
	if err := ReplaceFile(other, data, 0o644, nil); err != nil {
		b.Fatal(err)
	}
	runDuplex := func() time.Duration {
		w := exec.Command(dd, "if="+src, "of="+dst, "bs=4M", "conv=fsync,notrunc", "oflag=direct", "status=none")
		r := exec.Command(dd, "if="+other, "of=/dev/null", "bs=4M", "iflag=direct", "status=none")
		start := time.Now()
		if err := w.Start(); err != nil {
			b.Fatal(err)
		}
		if out, err := r.CombinedOutput(); err != nil {
			b.Fatalf("dd read: %v: %s", err, out)
		}
		if err := w.Wait(); err != nil {
			b.Fatalf("dd write: %v", err)
		}
		return time.Since(start)
	}
	runOurs := func(verify bool) time.Duration {
		slot := &Slot{Class: "rootfs", BootName: "B", Device: dst, Type: TypeFile, Size: size, Verify: &verify}
		start := time.Now()
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		t, err := OpenTarget(slot, TargetOptions{Booted: "A"})
		if err != nil {
			b.Fatal(err)
		}
		if err := t.Write(context.Background(), io.Reader(f), size, sum[:]); err != nil {
			b.Fatal(err)
		}
		if err := t.Close(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	best := func(cur *time.Duration, d time.Duration) {
		if *cur == 0 || d < *cur {
			*cur = d
		}
	}
	b.SetBytes(size)
	b.ResetTimer()
	var tHash, tDD, tDDDirect, tRead, tDuplex, tVerify, tPlain time.Duration
	for range b.N {
		// Three rounds, each starting with another variant, so a burst of
		// load elsewhere on the machine does not favour one of them.
		for round := range 3 {
			for i := range 4 {
				switch (round + i) % 4 {
				case 0:
					best(&tDD, runDD(false))
				case 1:
					best(&tVerify, runOurs(true))
				case 2:
					best(&tPlain, runOurs(false))
				case 3:
					best(&tDDDirect, runDD(true))
					best(&tRead, runRead())
					best(&tDuplex, runDuplex())
					best(&tHash, runHash())
				}
			}
		}
	}
	b.StopTimer()
	plain := tDD
	best(&tDD, tDDDirect)
	mibs := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	b.ReportMetric(mibs(tHash), "sha256-MiB/s")
	b.ReportMetric(mibs(plain), "dd-MiB/s")
	b.ReportMetric(mibs(tDDDirect), "dd-direct-MiB/s")
	b.ReportMetric(mibs(tRead), "dd-read-MiB/s")
	b.ReportMetric(min(1, tDD.Seconds()/tHash.Seconds()), "hash-ceiling")
	// With read-back, the device also reads every byte: unless it reads
	// and writes at once at full speed each, dd's write plus dd's read is
	// the device's share of the time.
	// duplex: how many times faster a write and a read run together than
	// one after the other; 1 means the disk cannot overlap them.
	b.ReportMetric((tDDDirect+tRead).Seconds()/tDuplex.Seconds(), "duplex")
	serial := max(tHash, tDD+tRead).Seconds()
	b.ReportMetric(plain.Seconds()/serial, "verify-ceiling")
	b.ReportMetric(tDD.Seconds()/serial, "verify-ceiling-direct")
	b.ReportMetric(mibs(tVerify), "verify-MiB/s")
	b.ReportMetric(mibs(tPlain), "noverify-MiB/s")
	b.ReportMetric(plain.Seconds()/tVerify.Seconds(), "verify-ratio")
	b.ReportMetric(plain.Seconds()/tPlain.Seconds(), "noverify-ratio")
	b.ReportMetric(tDD.Seconds()/tVerify.Seconds(), "verify-ratio-direct")
	b.ReportMetric(tDD.Seconds()/tPlain.Seconds(), "noverify-ratio-direct")
}
