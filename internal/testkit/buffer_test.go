package testkit

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
)

// Loggers on several goroutines write one Buffer while the test reads it; run
// with -race, a Buffer without its lock fails here. Every line arrives whole.
func TestBufferConcurrentWriters(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewTextHandler(&b, nil))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				log.Info("Delivered", "writer", w, "n", i)
				_ = b.String() // the test reading while others write
			}
		}()
	}
	wg.Wait()
	if n := b.Count("msg=Delivered"); n != 200 {
		t.Errorf("Count(msg=Delivered) = %d, want 200", n)
	}
	if n := b.Count(fmt.Sprintf("writer=%d n=49\n", 3)); n != 1 {
		t.Errorf("Count of writer 3's last line = %d, want 1:\n%s", n, b.String())
	}
	if n := b.Count("not logged"); n != 0 {
		t.Errorf("Count(not logged) = %d, want 0", n)
	}
}
