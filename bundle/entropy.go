package bundle

import "math"

// incompressible reports whether b's byte histogram (sampled) shows it will
// not shrink under zstd: order-0 entropy within 0.05 bit of the 8-bit maximum,
// as in encrypted or already compressed data (squashfs, gzip, media). The
// builder then stores the chunk raw without trying; readers do not care how
// the choice was made. It is a function of the content only, so builds stay
// reproducible.
func incompressible(b []byte) bool {
	if len(b) < 4096 {
		return false
	}
	// Sample up to 16 evenly spaced 4 KiB windows: enough for the estimate,
	// and a quarter of the work on a 256 KiB chunk.
	const window, windows = 4096, 16
	var h [4][256]uint32
	count := func(w []byte) {
		i := 0
		for ; i+4 <= len(w); i += 4 {
			h[0][w[i]]++
			h[1][w[i+1]]++
			h[2][w[i+2]]++
			h[3][w[i+3]]++
		}
		for ; i < len(w); i++ {
			h[0][w[i]]++
		}
	}
	total := len(b)
	if len(b) <= window*windows {
		count(b)
	} else {
		stride := (len(b) - window) / (windows - 1)
		for k := range windows {
			count(b[k*stride : k*stride+window])
		}
		total = window * windows
	}
	n := float64(total)
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
