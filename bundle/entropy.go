package bundle

import "math"

// incompressible reports whether b's byte histogram shows it will not
// shrink under zstd: order-0 entropy within 0.05 bit of the 8-bit maximum,
// as in encrypted or already compressed data (squashfs, gzip, media). The
// builder then stores the chunk raw without trying; readers do not care how
// the choice was made. It is a function of the content only, so builds stay
// reproducible.
func incompressible(b []byte) bool {
	if len(b) < 4096 {
		return false
	}
	var h [4][256]uint32
	i := 0
	for ; i+4 <= len(b); i += 4 {
		h[0][b[i]]++
		h[1][b[i+1]]++
		h[2][b[i+2]]++
		h[3][b[i+3]]++
	}
	for ; i < len(b); i++ {
		h[0][b[i]]++
	}
	n := float64(len(b))
	var e float64
	for v := range 256 {
		c := h[0][v] + h[1][v] + h[2][v] + h[3][v]
		if c != 0 {
			p := float64(c) / n
			e -= p * math.Log2(p)
		}
	}
	return e > 7.95
}
