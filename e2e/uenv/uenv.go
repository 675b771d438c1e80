// Package uenv encodes and decodes a single-copy U-Boot environment blob
// (CRC-32 IEEE little-endian over the data area, then name=value\0 pairs,
// \0 terminated, zero padded), the format of uboot.env and
// uboot-redund.env on the armv7 target's boot partition. The end-to-end
// test uses it as an independent reader of what the guest wrote.
package uenv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
)

// Size is the env size the armv7 boot script imports and exports.
const Size = 0x4000

// ErrCRC means the stored CRC does not match the data.
var ErrCRC = errors.New("uenv: bad CRC")

// Encode returns a size-byte blob holding vars, sorted by name.
func Encode(vars map[string]string, size int) ([]byte, error) {
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Strings(names)
	var data bytes.Buffer
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, "=\x00") || strings.Contains(vars[n], "\x00") {
			return nil, fmt.Errorf("encode env: bad variable %q", n)
		}
		data.WriteString(n + "=" + vars[n] + "\x00")
	}
	data.WriteByte(0)
	if data.Len() > size-4 {
		return nil, fmt.Errorf("encode env: %d bytes of variables do not fit %d", data.Len(), size)
	}
	b := make([]byte, size)
	copy(b[4:], data.Bytes())
	binary.LittleEndian.PutUint32(b, crc32.ChecksumIEEE(b[4:]))
	return b, nil
}

// Decode checks the CRC of a single-copy blob and returns its variables.
func Decode(b []byte) (map[string]string, error) {
	if len(b) < 5 {
		return nil, fmt.Errorf("decode env: %d bytes: %w", len(b), ErrCRC)
	}
	if binary.LittleEndian.Uint32(b) != crc32.ChecksumIEEE(b[4:]) {
		return nil, fmt.Errorf("decode env: %w", ErrCRC)
	}
	vars := map[string]string{}
	for _, kv := range bytes.Split(b[4:], []byte{0}) {
		if len(kv) == 0 {
			break
		}
		n, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			return nil, fmt.Errorf("decode env: entry %q has no '='", kv)
		}
		vars[n] = v
	}
	return vars, nil
}
