package slots

import (
	"strings"
	"testing"
)

// FuzzDecodeEnv: any bytes either fail with an error or decode to an env
// that encodes and decodes back to itself.
func FuzzDecodeEnv(f *testing.F) {
	for _, env := range []Env{{}, {"a": "1"}, raucEnv("A B", "3", "3"), {"x": strings.Repeat("y", 40)}} {
		for _, red := range []bool{false, true} {
			b, _ := EncodeEnv(env, 64, red, 3)
			f.Add(b, red)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, redundant bool) {
		env, flags, err := DecodeEnv(b, redundant)
		if err != nil {
			return
		}
		out, err := EncodeEnv(env, len(b), redundant, flags)
		if err != nil {
			// A decoded env always fits the size it came from.
			t.Fatalf("re-encode: %v", err)
		}
		again, fl, err := DecodeEnv(out, redundant)
		if err != nil || fl != flags || strings.Join(envLines(again), "\x00") != strings.Join(envLines(env), "\x00") {
			t.Fatalf("round trip: %v %d %v, want %v %d", again, fl, err, env, flags)
		}
	})
}

// FuzzParseConfig: no input panics; accepted configs have every default
// filled.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sampleConfig))
	f.Add([]byte("bootloader: {type: uboot}\nslots: {r: {a: {device: /x}, b: {device: /y}}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if c.Paths.Cmdline == "" || len(c.BootNames()) != 2 {
			t.Fatalf("accepted config without defaults: %+v", c)
		}
	})
}

// FuzzParseFwEnvConfig: no input panics; accepted configs have one or two
// copies of one size.
func FuzzParseFwEnvConfig(f *testing.F) {
	f.Add([]byte("/boot/uboot.env 0x0000 0x4000\n"))
	f.Add([]byte("/dev/mmcblk0 0x400000 0x4000 0x200 2\n/dev/mmcblk0 0x404000 0x4000\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseFwEnvConfig(b)
		if err != nil {
			return
		}
		if len(c) < 1 || len(c) > 2 || c[0].Size != c[len(c)-1].Size {
			t.Fatalf("accepted %+v", c)
		}
	})
}
