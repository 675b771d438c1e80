//go:build !linux

package slots

import "os"

func blockDevNum(path string) (devNum, bool)  { return devNum{}, false }
func dropCache(f *os.File, off, n int64)      {}
func startWriteback(f *os.File, off, n int64) {}
func waitWriteback(f *os.File, off, n int64)  {}

const openExclusive = 0
