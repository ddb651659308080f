package backoff

import (
	"testing"
	"time"
)

func TestSchedule(t *testing.T) {
	b := Backoff{Policy: Policy{Min: time.Second, Max: 8 * time.Second}}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		got := b.Next()
		if b.Current() != want || got < want*8/10 || got > want*12/10 {
			t.Fatalf("wait %d = %s (step %s), want %s ±20%%", i, got, b.Current(), want)
		}
	}
	b.Reset()
	if b.Current() != 0 || b.Step(0) != time.Second {
		t.Fatal("Reset does not start over")
	}
	// Jitter spreads: over many draws both sides of the step are seen.
	lo, hi := false, false
	for range 200 {
		d := b.Spread(10 * time.Second)
		lo, hi = lo || d < 10*time.Second, hi || d > 10*time.Second
	}
	if !lo || !hi {
		t.Error("jitter does not spread the waits")
	}
	none := Policy{Min: time.Second, Jitter: -1}
	if none.Spread(3*time.Second) != 3*time.Second {
		t.Error("a negative Jitter spreads")
	}
	if (Policy{Min: 5 * time.Second, Max: time.Second}).Step(5*time.Second) != 5*time.Second {
		t.Error("a Max below Min is not raised to Min")
	}
}
