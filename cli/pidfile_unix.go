//go:build unix

package cli

import (
	"errors"
	"syscall"
)

// processAlive: signal 0 checks that pid exists without touching it. EPERM
// means it exists under another user, which still holds the pid file.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
