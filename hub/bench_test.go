package hub_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autopatcher/autopatcher/hub"
	"github.com/autopatcher/autopatcher/hub/hubtest"
	"github.com/autopatcher/autopatcher/transport"
)

// benchDevices is the fleet size of BenchmarkFleet.
const benchDevices = 1000

// TestMain doubles as the hub process of BenchmarkFleet: with AUTOPATCH_BENCH_HUB set to
// a data directory it serves a hub on loopback, prints its addresses and waits for stdin
// to close.
func TestMain(m *testing.M) {
	if dir := os.Getenv("AUTOPATCH_BENCH_HUB"); dir != "" {
		var cfg hub.Config
		cfg.Data = dir
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.MQTT.Addr = "127.0.0.1:0"
		cfg.Tokens = []hub.TokenConfig{{Name: "bench", Role: hub.RoleViewer, Token: hubtest.ViewerToken}}
		s, err := hub.Start(context.Background(), cfg, discard())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s %s\n", s.HTTPAddr(), s.MQTTAddr())
		io.Copy(io.Discard, os.Stdin)
		s.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// mqttString encodes an MQTT UTF-8 string or binary field.
func mqttString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func mqttPacket(typ byte, body []byte) []byte {
	p := []byte{typ}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		p = append(p, d)
		if n == 0 {
			break
		}
	}
	return append(p, body...)
}

func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}

// rawDevice connects with a minimal MQTT v5 client (so the benchmark measures the hub,
// not a client library), publishes a Hello with QoS 1 and waits for its PUBACK. The
// connection stays open and idle (keep-alive 20 minutes).
func rawDevice(addr, id string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	var v []byte
	v = mqttString(v, "MQTT")
	v = append(v, 5, 0x80|0x40|0x02) // v5; user name, password, clean start
	v = binary.BigEndian.AppendUint16(v, 1200)
	v = append(v, 0) // no properties
	v = mqttString(v, id)
	v = mqttString(v, id)
	v = mqttString(v, "pw-"+id)
	hello, _ := transport.Encode(&transport.Hello{Device: id, Hardware: "bench", Daemon: "bench",
		Slots:      []transport.SlotInfo{{Class: "rootfs", Name: "A", Version: "1.0.0", Booted: true}, {Class: "rootfs", Name: "B", Version: "0.9.0"}},
		Components: []transport.Installed{{Name: "rootfs", Version: "1.0.0"}, {Name: "app", Version: "3.2.1"}}})
	topic, _ := transport.Topic(id, transport.ChHello)
	var p []byte
	p = mqttString(p, topic)
	p = binary.BigEndian.AppendUint16(p, 1) // packet id
	p = append(p, 0)                        // no properties
	p = append(p, hello...)
	if _, err := c.Write(append(mqttPacket(0x10, v), mqttPacket(0x32, p)...)); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 64)
	for _, want := range []byte{0x20, 0x40} {
		typ, body, err := readPacket(r)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		if typ != want || len(body) < 2 || (want == 0x20 && body[1] != 0) || (want == 0x40 && len(body) > 2 && body[2] >= 0x80) {
			c.Close()
			return nil, fmt.Errorf("%s: got packet %#x % x, want %#x ok", id, typ, body, want)
		}
	}
	return c, nil
}

// tcpRoundTrips is the physical reference: the rate of loopback TCP connect + one
// small request/response against a trivial server in this run.
func tcpRoundTrips(b *testing.B, n int) float64 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 64)
				c.Read(buf)
				c.Write(buf[:4])
				c.Close()
			}()
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				return
			}
			c.Write([]byte("ping"))
			io.ReadFull(c, make([]byte, 4))
			c.Close()
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkFleet starts the hub as a separate process (this test binary in hub mode),
// connects benchDevices devices that each report their inventory, and reports:
//   - devices/s: devices connected and with their inventory stored, per second of wall time
//     (from the first connect until the API lists every device with its hardware id);
//   - ratio: devices/s over loopback TCP connect+round trips/s of the same run;
//   - KiB/device: growth of the hub process's RSS (VmRSS) with all devices connected and
//     idle, divided by the number of devices.
func BenchmarkFleet(b *testing.B) {
	for i := 0; i < b.N; i++ {
		// The reference first, on a quiet machine: loopback TCP connects with one round trip.
		tcpRoundTrips(b, benchDevices) // warm up
		ref := tcpRoundTrips(b, 4*benchDevices)
		dir := b.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "AUTOPATCH_BENCH_HUB="+filepath.Join(dir, "data"))
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		var httpAddr, mqttAddr string
		if _, err := fmt.Fscan(stdout, &httpAddr, &mqttAddr); err != nil {
			b.Fatalf("hub process: %v", err)
		}
		// Let the hub settle (store opened, broker started) before the baseline.
		time.Sleep(500 * time.Millisecond)
		before, err := rssKiB(cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}

		start := time.Now()
		conns := make([]net.Conn, benchDevices)
		var wg sync.WaitGroup
		errs := make(chan error, benchDevices)
		sem := make(chan struct{}, 64) // concurrent connects in flight
		for d := 0; d < benchDevices; d++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := rawDevice(mqttAddr, fmt.Sprintf("bench-%04d", d))
				if err != nil {
					errs <- err
					return
				}
				conns[d] = c
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		// Wait until the hub has stored every inventory (API, as an operator would see it).
		for {
			n, err := countDevices(httpAddr)
			if err != nil {
				b.Fatal(err)
			}
			if n == benchDevices {
				break
			}
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("only %d of %d inventories stored", n, benchDevices)
			}
			time.Sleep(20 * time.Millisecond)
		}
		elapsed := time.Since(start)
		time.Sleep(time.Second) // idle
		after, err := rssKiB(cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		rate := float64(benchDevices) / elapsed.Seconds()
		b.ReportMetric(rate, "devices/s")
		b.ReportMetric(rate/ref, "ratio")
		b.ReportMetric(ref, "tcp-roundtrips/s")
		b.ReportMetric(float64(after-before)/benchDevices, "KiB/device")
		b.ReportMetric(float64(before)/1024, "base-MiB")
		for _, c := range conns {
			c.Close()
		}
		stdin.Close()
		cmd.Wait()
	}
}

func countDevices(addr string) (int, error) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/v1/devices?filter=hardware=bench,online=true", nil)
	req.Header.Set("Authorization", "Bearer "+hubtest.ViewerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var ds []hub.Device
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
		return 0, err
	}
	return len(ds), nil
}
