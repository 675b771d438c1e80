package transport

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/tinylib/msgp/msgp"
)

func TestEncodeDecode(t *testing.T) {
	msgs := []Message{
		&Hello{Device: "d1", Hardware: "rpi4", Daemon: "0.1.0",
			Slots:      []SlotInfo{{Class: "rootfs", Name: "A", Version: "1.0.0", Booted: true}, {Class: "rootfs", Name: "B", Bad: true}},
			Components: []Installed{{Name: "rootfs", Version: "1.0.0"}},
			Trial:      "B", LastResult: "rollback", LastKind: KindHealth, OfferAge: 42, Offer: "o1"},
		&Status{State: "downloading", Offer: "o1", Bundle: "app@2.1.0", Component: "rootfs", Done: 3, Total: 9, Kind: KindTimeout, Reason: "x", Time: 1700000000},
		&Get{Offer: "o1", Digest: []byte{1, 2, 3}, Comp: 2, Base: 64, Bitmap: []byte{0xff, 0x01}, Window: 16, Seq: 7},
		&Get{Offer: "o1", Manifest: true, Window: 1},
		&Offer{ID: "o1", Bundle: "app", Version: "2.1.0", Digest: bytes.Repeat([]byte{9}, 32), Size: 1 << 20, Issued: 10, Expires: 20, Severity: "security",
			Policy: Policy{Reboot: RebootWindow, Window: "0 2 * * *", WindowLength: 3600}},
		&Cmd{ID: "c1", Op: CmdReboot},
		&Data{Offer: "o1", Comp: 1, Index: 5, Bytes: []byte("chunk"), Seq: 3},
		&Data{Offer: "o2", Err: KindNotOffered, Detail: "no"},
	}
	for _, m := range msgs {
		ch := ChannelOf(m)
		t.Run(string(ch), func(t *testing.T) {
			b, err := Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(ch, b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.version() != Version {
				t.Errorf("version = %d, want %d", got.version(), Version)
			}
			if m.version() != 0 {
				t.Errorf("Encode modified its argument's version")
			}
			m.setVersion(Version)
			if !reflect.DeepEqual(got, m) {
				t.Errorf("round trip = %#v, want %#v", got, m)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := Encode(&Cmd{ID: "c", Op: CmdCancel})
	if err != nil {
		t.Fatal(err)
	}
	future, _ := Encode(&Cmd{V: Version + 1, ID: "c"})
	noVersion := msgp.AppendMapHeader(nil, 1)
	noVersion = msgp.AppendString(noVersion, "op")
	noVersion = msgp.AppendString(noVersion, "reboot")
	wrongType := msgp.AppendMapHeader(nil, 1)
	wrongType = msgp.AppendString(wrongType, "v")
	wrongType = msgp.AppendString(wrongType, "one")

	tests := []struct {
		name string
		ch   Channel
		b    []byte
		want error
	}{
		{"garbage", ChCmd, []byte("not msgpack"), ErrMalformed},
		{"truncated", ChCmd, good[:len(good)-2], ErrMalformed},
		{"trailing", ChCmd, append(append([]byte{}, good...), 0xc0), ErrMalformed},
		{"empty", ChCmd, nil, ErrMalformed},
		{"wrong type", ChCmd, wrongType, ErrMalformed},
		{"unknown channel", "nope", good, ErrMalformed},
		{"future version", ChCmd, future, ErrVersion},
		{"no version", ChCmd, noVersion, ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.ch, tt.b); !errors.Is(err, tt.want) {
				t.Errorf("Decode = %v, want %v", err, tt.want)
			}
		})
	}
}

// A newer peer may add fields; they are skipped.
func TestDecodeSkipsUnknownFields(t *testing.T) {
	b := msgp.AppendMapHeader(nil, 3)
	b = msgp.AppendString(b, "v")
	b = msgp.AppendUint32(b, Version)
	b = msgp.AppendString(b, "future")
	b = msgp.AppendArrayHeader(b, 1)
	b = msgp.AppendInt(b, 5)
	b = msgp.AppendString(b, "op")
	b = msgp.AppendString(b, CmdReport)
	m, err := Decode(ChCmd, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.(*Cmd).Op; got != CmdReport {
		t.Errorf("Op = %q, want %q", got, CmdReport)
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range []Message{&Get{Offer: "o", Bitmap: []byte{1}}, &Data{Bytes: []byte("x")}, &Hello{Device: "d"}} {
		b, _ := Encode(m)
		f.Add(string(ChannelOf(m)), b)
	}
	f.Fuzz(func(t *testing.T, ch string, b []byte) {
		m, err := Decode(Channel(ch), b)
		if err != nil {
			return
		}
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := Decode(Channel(ch), again)
		if err != nil {
			t.Fatalf("decode of re-encoded: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip differs: %#v vs %#v", m, m2)
		}
	})
}
