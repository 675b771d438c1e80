package slots

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// grubBlock builds a 1024-byte block from a body written after the signature.
func grubBlock(body string) []byte {
	b := []byte(grubEnvSig + body)
	for len(b) < GrubEnvSize {
		b = append(b, '#')
	}
	return b
}

func TestParseGrubEnv(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string // name=value pairs joined with "|", values quoted
	}{
		{"empty", grubBlock(""), ""},
		{"with warning", grubBlock(grubEnvWarning + "a=1\n"), `a="1"`},
		{"escapes", grubBlock("k=a\\\\b\\\nc\nx=y z=w\n"), `k="a\\b\nc"|x="y z=w"`},
		{"empty value", grubBlock("e=\n"), `e=""`},
		{"comment between", grubBlock("a=1\n# note\nb=2\n"), `a="1"|b="2"`},
		{"escaped newline in comment", grubBlock("# x\\\nb=2\nc=3\n"), `c="3"`},
		{"any escape", grubBlock("q=\\x\\=\n"), `q="x="`},
		{"full, no padding", append([]byte(grubEnvSig+"v="), append(bytes.Repeat([]byte("x"), GrubEnvSize-len(grubEnvSig)-3), '\n')...), "v=" + `"` + strings.Repeat("x", GrubEnvSize-len(grubEnvSig)-3) + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseGrubEnv(tt.in)
			if err != nil {
				t.Fatalf("ParseGrubEnv: %v", err)
			}
			var parts []string
			for _, n := range e.Names() {
				v, _ := e.Get(n)
				parts = append(parts, n+"="+strconvQuote(v))
			}
			if got := strings.Join(parts, "|"); got != tt.want {
				t.Errorf("ParseGrubEnv = %s, want %s", got, tt.want)
			}
		})
	}
}

func strconvQuote(s string) string {
	r := strings.NewReplacer("\\", "\\\\", "\n", "\\n", "\"", "\\\"")
	return `"` + r.Replace(s) + `"`
}

func TestParseGrubEnvRefuses(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		msg  string
	}{
		{"short", grubBlock("a=1\n")[:1023], "1023 bytes"},
		{"long", append(grubBlock("a=1\n"), '#'), "1025 bytes"},
		{"empty file", nil, "0 bytes"},
		{"bad header", append([]byte("# GRUB Environment Blok\n"), grubBlock("")[24:]...), "signature"},
		{"u-boot env", append([]byte{0x12, 0x34, 0x56, 0x78}, grubBlock("")[4:]...), "signature"},
		{"no equals", grubBlock("garbage\na=1\n"), "not name=value"},
		{"backslash in name", grubBlock("a\\b=1\n"), "not name=value"},
		{"empty name", grubBlock("=1\n"), "empty name"},
		{"unterminated", []byte(grubEnvSig + strings.Repeat("x", 10) + "=" + strings.Repeat("y", GrubEnvSize-len(grubEnvSig)-11)), "past the end"},
		{"trailing backslash", []byte(grubEnvSig + "x=" + strings.Repeat("y", GrubEnvSize-len(grubEnvSig)-3) + "\\"), "past the end"},
		{"NUL", grubBlock("a=\x00\n"), "NUL"},
		{"duplicate", grubBlock("a=1\na=2\n"), "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseGrubEnv(tt.in)
			if !errors.Is(err, ErrGrubEnv) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ParseGrubEnv error = %v, want ErrGrubEnv saying %q", err, tt.msg)
			}
		})
	}
}

func TestGrubEnvBytes(t *testing.T) {
	e := NewGrubEnv()
	for _, kv := range [][2]string{{"ORDER", "A B"}, {"A_OK", "1"}, {"x", "a\\b\nc"}, {"A_OK", "0"}} {
		if err := e.Set(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	e.Unset("nothing")
	got, err := e.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if want := grubBlock(grubEnvWarning + "ORDER=A B\nA_OK=0\nx=a\\\\b\\\nc\n"); !bytes.Equal(got, want) {
		t.Errorf("Bytes() = %q\nwant %q", got, want)
	}
	for _, n := range []string{"", "#x", "a=b", "a\\", "a\nb", "a\x00"} {
		if err := e.Set(n, "v"); !errors.Is(err, ErrGrubEnv) {
			t.Errorf("Set(%q) error = %v, want ErrGrubEnv", n, err)
		}
	}
	if err := e.Set("n", "a\x00"); !errors.Is(err, ErrGrubEnv) {
		t.Errorf("Set with NUL value: error = %v, want ErrGrubEnv", err)
	}
	// Exactly full is fine; one byte more is refused.
	room := GrubEnvSize - len(got) + bytes.Count(got, []byte("#")) - bytes.Count([]byte(grubEnvSig+grubEnvWarning), []byte("#"))
	if err := e.Set("fill", strings.Repeat("f", room-len("fill=\n"))); err != nil {
		t.Fatal(err)
	}
	full, err := e.Bytes()
	if err != nil || len(full) != GrubEnvSize || full[GrubEnvSize-1] != '\n' {
		t.Fatalf("exactly full block: len %d, err %v", len(full), err)
	}
	if back, err := ParseGrubEnv(full); err != nil {
		t.Fatalf("reparse full block: %v", err)
	} else if v, _ := back.Get("fill"); len(v) != room-len("fill=\n") {
		t.Errorf("fill has %d bytes after reparse", len(v))
	}
	if !bytes.Contains(full, []byte(grubEnvWarning)) {
		t.Error("exactly full block lost grub-editenv's comment")
	}
	// Past that, the comment line gives up its room.
	e.Set("fill", strings.Repeat("f", room-len("fill=\n")+1))
	out, err := e.Bytes()
	if err != nil {
		t.Fatalf("block needing the comment's room: %v", err)
	}
	if bytes.Contains(out, []byte(grubEnvWarning)) || !bytes.HasPrefix(out, []byte(grubEnvSig+"ORDER=")) {
		t.Errorf("comment line kept in a block that needs its room: %q", out[:120])
	}
	if _, err := ParseGrubEnv(out); err != nil {
		t.Errorf("reparse: %v", err)
	}
	max := room + len(grubEnvWarning) - len("fill=\n")
	e.Set("fill", strings.Repeat("f", max))
	if out, err := e.Bytes(); err != nil || out[GrubEnvSize-1] != '\n' {
		t.Errorf("block full without the comment: err %v", err)
	}
	e.Set("fill", strings.Repeat("f", max+1))
	if _, err := e.Bytes(); !errors.Is(err, ErrGrubEnvFull) {
		t.Errorf("overfull Bytes() error = %v, want ErrGrubEnvFull", err)
	}
	// A newline costs two bytes once escaped.
	e.Set("fill", strings.Repeat("f", max-1)+"\n")
	if _, err := e.Bytes(); !errors.Is(err, ErrGrubEnvFull) {
		t.Errorf("overfull by escaping: error = %v, want ErrGrubEnvFull", err)
	}
}

// Values grub-editenv accepts on its command line: spaces, '=', backslashes,
// newlines, an empty value.
var grubInteropVars = [][2]string{
	{"ORDER", "B A"},
	{"A_OK", "1"},
	{"spaced", "a b  c "},
	{"eq", "x=y=z"},
	{"back", `C:\path\\double\`},
	{"nl", "line1\nline2\n"},
	{"empty", ""},
	{"mixed", "a\\\nb=c \\n"},
}

// TestGrubEnvWriteInterop: what we write, grub-editenv lists exactly.
func TestGrubEnvWriteInterop(t *testing.T) {
	editenv := tool(t, "grub-editenv", "grub-common")
	path := filepath.Join(t.TempDir(), "grubenv")
	e := NewGrubEnv()
	var want strings.Builder
	for _, kv := range grubInteropVars {
		if err := e.Set(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
		want.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	b, err := e.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := run(t, editenv, path, "list"); got != want.String() {
		t.Errorf("grub-editenv list = %q\nwant %q", got, want.String())
	}
	// grub-editenv can keep editing what we wrote, and we read its result.
	run(t, editenv, path, "set", "spaced=short", "new=1")
	run(t, editenv, path, "unset", "eq")
	raw, _ := os.ReadFile(path)
	back, err := ParseGrubEnv(raw)
	if err != nil {
		t.Fatalf("read grub-editenv's edit of our block: %v", err)
	}
	if v, _ := back.Get("spaced"); v != "short" {
		t.Errorf("spaced = %q, want short", v)
	}
	if _, ok := back.Get("eq"); ok {
		t.Error("eq still set after grub-editenv unset")
	}
	if v, _ := back.Get("nl"); v != "line1\nline2\n" {
		t.Errorf("nl = %q", v)
	}
	// A block so full that it goes without grub-editenv's comment line.
	big := NewGrubEnv()
	big.Set("big", strings.Repeat("b", GrubEnvSize-len(grubEnvSig)-len("big=\n")))
	raw, err = big.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, raw, 0o644)
	if got := run(t, editenv, path, "list"); got != "big="+strings.Repeat("b", GrubEnvSize-len(grubEnvSig)-len("big=\n"))+"\n" {
		t.Errorf("grub-editenv list of a full block = %.40q...", got)
	}
}

// editenvInterop fills an existing grubenv with grub-editenv: the interop
// variables, a change, an addition and a removal.
func editenvInterop(t *testing.T, editenv, path string) {
	t.Helper()
	args := []string{path, "set"}
	for _, kv := range grubInteropVars {
		args = append(args, kv[0]+"="+kv[1])
	}
	run(t, editenv, args...)
	run(t, editenv, path, "set", "ORDER=A B", "extra=1")
	run(t, editenv, path, "unset", "spaced")
}

// checkInteropVars checks what editenvInterop left.
func checkInteropVars(t *testing.T, e *GrubEnv) {
	t.Helper()
	want := map[string]string{"extra": "1"}
	for _, kv := range grubInteropVars {
		want[kv[0]] = kv[1]
	}
	want["ORDER"] = "A B"
	delete(want, "spaced")
	if got := len(e.Names()); got != len(want) {
		t.Errorf("read %d variables %q, want %d", got, e.Names(), len(want))
	}
	for n, v := range want {
		if got, ok := e.Get(n); !ok || got != v {
			t.Errorf("%s = %q (set %v), want %q", n, got, ok, v)
		}
	}
}

// TestGrubEnvGolden reads a block grub-editenv wrote (testdata, rewritten
// only with UPDATE_GOLDEN=1) and encodes it back to the same bytes, so the
// format is checked even where grub-editenv is not installed.
func TestGrubEnvGolden(t *testing.T) {
	golden := filepath.Join("testdata", "grubenv", "editenv-interop")
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		editenv := tool(t, "grub-editenv", "grub-common")
		os.Remove(golden)
		run(t, editenv, golden, "create")
		editenvInterop(t, editenv, golden)
	}
	raw, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseGrubEnv(raw)
	if err != nil {
		t.Fatal(err)
	}
	checkInteropVars(t, e)
	ours, err := e.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, raw) {
		t.Errorf("re-encoded golden block differs:\n ours %q\nfile %q", ours, raw)
	}
}

// TestGrubEnvReadInterop: what grub-editenv writes, we read, and we encode
// the same variables to the same bytes.
func TestGrubEnvReadInterop(t *testing.T) {
	editenv := tool(t, "grub-editenv", "grub-common")
	path := filepath.Join(t.TempDir(), "grubenv")
	run(t, editenv, path, "create")
	raw, _ := os.ReadFile(path)
	empty, err := NewGrubEnv().Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, empty) {
		t.Errorf("grub-editenv create wrote %q\nwe write %q", raw, empty)
	}
	editenvInterop(t, editenv, path)
	raw, _ = os.ReadFile(path)
	e, err := ParseGrubEnv(raw)
	if err != nil {
		t.Fatalf("ParseGrubEnv of grub-editenv's file: %v", err)
	}
	checkInteropVars(t, e)
	ours, err := e.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, raw) {
		t.Errorf("re-encoded block differs from grub-editenv's:\n ours %q\ntheirs %q", ours, raw)
	}
}

func FuzzParseGrubEnv(f *testing.F) {
	f.Add(grubBlock(grubEnvWarning + "ORDER=A B\nA_OK=1\nx=a\\\\b\\\nc\n"))
	f.Add(grubBlock("# c\\\nx=1\n"))
	seeds, _ := filepath.Glob(filepath.Join("testdata", "grubenv", "*"))
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < GrubEnvSize {
			b = append(b, bytes.Repeat([]byte("#"), GrubEnvSize-len(b))...)
		}
		b = b[:GrubEnvSize]
		e, err := ParseGrubEnv(b)
		if err != nil {
			return
		}
		out, err := e.Bytes()
		if err != nil {
			t.Fatalf("a block that parsed does not encode: %v", err)
		}
		back, err := ParseGrubEnv(out)
		if err != nil {
			t.Fatalf("reparse: %v", err)
		}
		if strings.Join(back.Names(), "\x00") != strings.Join(e.Names(), "\x00") {
			t.Fatalf("names %q -> %q", e.Names(), back.Names())
		}
		for _, n := range e.Names() {
			a, _ := e.Get(n)
			c, _ := back.Get(n)
			if a != c {
				t.Fatalf("%s: %q -> %q", n, a, c)
			}
		}
	})
}
