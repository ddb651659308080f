//go:build !windows

package svclog

import (
	"fmt"
	"os"
	"syscall"
)

// StderrIsJournal reports whether stderr is connected to the journal: systemd
// sets JOURNAL_STREAM to the device and inode of the stream it connected
// (systemd.exec(5)); a child whose stderr was redirected elsewhere does not match.
func StderrIsJournal() bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
