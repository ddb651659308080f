package transport

import (
	"errors"
	"syscall"
)

// Winsock error codes: the net package on Windows returns these as
// syscall.Errno, and they do not match the POSIX-style syscall constants.
// https://learn.microsoft.com/windows/win32/winsock/windows-sockets-error-codes-2
const (
	wsaeNetUnreach  = syscall.Errno(10051)
	wsaeConnAborted = syscall.Errno(10053)
	wsaeConnReset   = syscall.Errno(10054)
	wsaeConnRefused = syscall.Errno(10061)
	wsaeHostUnreach = syscall.Errno(10065)
)

func isRefused(err error) bool {
	return errors.Is(err, wsaeConnRefused) || errors.Is(err, syscall.ECONNREFUSED)
}

func isReset(err error) bool {
	return errors.Is(err, wsaeConnReset) || errors.Is(err, wsaeConnAborted) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED)
}

func isUnreachable(err error) bool {
	return errors.Is(err, wsaeHostUnreach) || errors.Is(err, wsaeNetUnreach) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}
