package verify

import (
	"errors"

	"golang.org/x/sys/windows"
)

// addrInUse reports whether err is a bind to an address another socket holds.
func addrInUse(err error) bool { return errors.Is(err, windows.WSAEADDRINUSE) }
