package budget

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
)

var t0 = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)

// Over many windows, no 30 s window sees more than share*limit (+1 for the burst).
func TestNeverExceedsShare(t *testing.T) {
	clk := clock.NewFake(t0)
	b := New(1500, 30*time.Second, 0.6, clk)
	var sent []time.Time
	for i := 0; i < 3000; i++ {
		if err := b.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, clk.Now())
	}
	max := 0
	for i := range sent {
		n := 0
		for j := i; j < len(sent) && sent[j].Sub(sent[i]) < 30*time.Second; j++ {
			n++
		}
		if n > max {
			max = n
		}
	}
	if max > 901 {
		t.Fatalf("busiest 30 s window had %d requests, budget share allows 900", max)
	}
	if max < 880 {
		t.Fatalf("busiest 30 s window had only %d requests; the budget is not being used", max)
	}
	if n, share := b.Used(); n > 901 || share > 0.601 {
		t.Fatalf("Used() = %d, %.3f", n, share)
	}
}

func TestPauseUntilIsObeyedExactly(t *testing.T) {
	clk := clock.NewFake(t0)
	b := New(1500, 30*time.Second, 0.6, clk)
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	throttledAt := clk.Now()
	b.PauseUntil(throttledAt.Add(7 * time.Second)) // 429 with Retry-After: 7
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := clk.Now().Sub(throttledAt); got < 7*time.Second {
		t.Fatalf("next request %v after the 429, want at least 7s", got)
	}
}

func TestMinCycle(t *testing.T) {
	b := New(1500, 30*time.Second, 0.6, clock.NewFake(t0)) // 30 requests/s
	if got := b.MinCycle(77); got.Round(time.Millisecond) != 2567*time.Millisecond {
		t.Fatalf("MinCycle(77) = %v, want ~2.567s (77 gaps at 30/s: cycles follow each other)", got)
	}
	if got := b.MinCycle(1); got != 34*time.Millisecond {
		t.Fatalf("MinCycle(1) = %v, want 34ms (33.3 ms rounded up to whole ms)", got)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	b := New(1, time.Hour, 0.5, clock.Real{})
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := b.Wait(ctx); err == nil {
		t.Fatal("Wait after cancel returned nil")
	}
}

// While a write waits (WaitFirst), polls (Wait) give way and send nothing.
func TestWaitFirstGoesAhead(t *testing.T) {
	clk := clock.NewFake(t0)
	b := New(1500, 30*time.Second, 0.6, clk)
	b.first = 1 // a write is waiting
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait while a write waits = %v; want it to give way until its context ends", err)
	}
	if n, _ := b.Used(); n != 0 {
		t.Fatalf("%d requests counted while giving way", n)
	}
	b.first = 0
	if err := b.WaitFirst(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Used(); n != 2 || b.first != 0 {
		t.Fatalf("Used() = %d and %d writers waiting after one write and one poll", n, b.first)
	}
}
