package clock

import (
	"context"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

// The fake clock's timers fire at once, advancing the time as a Sleep does, and
// its tickers fire when the time passes a tick.
func TestFake(t *testing.T) {
	f := NewFake(t0)
	tick := f.NewTicker(10 * time.Second)
	defer tick.Stop()
	timer := f.NewTimer(4 * time.Second)
	if got := <-timer.C(); !got.Equal(t0.Add(4 * time.Second)) {
		t.Fatalf("timer fired at %v", got)
	}
	select {
	case <-tick.C():
		t.Fatal("ticked before its first tick")
	default:
	}
	f.Sleep(context.Background(), 7*time.Second)
	select {
	case got := <-tick.C():
		if !got.Equal(t0.Add(11 * time.Second)) {
			t.Fatalf("tick at %v", got)
		}
	default:
		t.Fatal("no tick after 11 s")
	}
	f.Advance(25 * time.Second) // past two ticks: one waits, as with time.Ticker
	<-tick.C()
	select {
	case <-tick.C():
		t.Fatal("two ticks waited")
	default:
	}
	if sl := f.Sleeps(); len(sl) != 2 || sl[0] != 4*time.Second || sl[1] != 7*time.Second {
		t.Errorf("sleeps %v", sl)
	}
}

// The real clock's timer fires after its duration and can be stopped.
func TestReal(t *testing.T) {
	var r Real
	timer := r.NewTimer(time.Millisecond)
	<-timer.C()
	stopped := r.NewTimer(time.Hour)
	if !stopped.Stop() {
		t.Error("Stop of a pending timer reported nothing stopped")
	}
	tick := r.NewTicker(time.Millisecond)
	<-tick.C()
	tick.Stop()
}
