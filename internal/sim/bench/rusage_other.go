//go:build !windows

package bench

import (
	"syscall"
	"time"
)

// rusage is the CPU time (user + system) this process has used.
func rusage() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
