package bundle

// Extent is where one stored chunk lies in a bundle file.
type Extent struct {
	Offset int64 // from the start of the file
	Length int64 // stored bytes
}

// Layout gives the file extent of every stored chunk: Layout(m, off)[c][i]
// is chunk i of component c, where off is the file offset of the first
// payload byte (Reader.DataOffset, or HeaderSize plus the signed section
// length). Stored chunks follow each other with no gaps, components in
// manifest order, so a hub can serve any chunk straight from the file.
func Layout(m *Manifest, dataOffset int64) [][]Extent {
	out := make([][]Extent, len(m.Components))
	off := dataOffset
	for c := range m.Components {
		chunks := m.Components[c].Chunks
		ext := make([]Extent, len(chunks))
		for i, ch := range chunks {
			ext[i] = Extent{Offset: off, Length: int64(ch.StoredLength)}
			off += int64(ch.StoredLength)
		}
		out[c] = ext
	}
	return out
}

// StoredSize is the number of payload bytes that follow the signed section.
func (m *Manifest) StoredSize() int64 {
	var n int64
	for c := range m.Components {
		n += m.Components[c].StoredSize()
	}
	return n
}

// StoredSize is the number of bytes the component's chunks occupy in the file.
func (c *Component) StoredSize() int64 {
	var n int64
	for _, ch := range c.Chunks {
		n += int64(ch.StoredLength)
	}
	return n
}
