//go:build !linux

package device

import "sync"

var engineMu sync.Mutex

func (e *Engine) lock() (func(), error) {
	engineMu.Lock()
	return engineMu.Unlock, nil
}
