//go:build !windows

package verify

import (
	"errors"
	"syscall"
)

// addrInUse reports whether err is a bind to an address another socket holds.
func addrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
