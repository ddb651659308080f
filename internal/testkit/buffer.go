package testkit

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a log destination that the goroutines under test write while the
// test reads it (a bytes.Buffer is not safe for that). The zero value is ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count returns how many times substr occurs in what was written, e.g. how often
// a message was logged.
func (b *Buffer) Count(substr string) int { return strings.Count(b.String(), substr) }
