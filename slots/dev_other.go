//go:build !linux

package slots

import "os"

func blockDevNum(path string) (devNum, bool)  { return devNum{}, false }
func dropCache(f *os.File, off, n int64)      {}
func startWriteback(f *os.File, off, n int64) {}
func waitWriteback(f *os.File, off, n int64)  {}

const openExclusive = 0

const directAlign = 4096

func openDirect(path string) (*os.File, error) { return nil, os.ErrInvalid }
func alignedBuf(n int) ([]byte, func())        { return make([]byte, n), func() {} }

func openDirectWrite(path string) (*os.File, error) { return nil, os.ErrInvalid }
