//go:build !windows

package svclog

import (
	"fmt"
	"syscall"
	"testing"
)

func TestStderrIsJournalMatchesTheStream(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		t.Skip("stderr cannot be stat'ed:", err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !StderrIsJournal() {
		t.Fatal("JOURNAL_STREAM naming stderr: not seen as the journal")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1))
	if StderrIsJournal() {
		t.Fatal("JOURNAL_STREAM naming another stream (stderr redirected by a child): seen as the journal")
	}
	t.Setenv("JOURNAL_STREAM", "")
	if StderrIsJournal() {
		t.Fatal("no JOURNAL_STREAM: seen as the journal")
	}
}
