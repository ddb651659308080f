package histogram

import (
	"math"
	"sync"
	"testing"
	"time"
)

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Each observation lands in the bucket of the first bound at or above it (a
// bound is inclusive, as Prometheus' le), above the last in Count only.
func TestObserveBuckets(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int // index into Bounds; NumBounds: +Inf
	}{
		{0, 0}, {-time.Second, 0}, {secs(0.05), 0}, {secs(0.05) + 1, 1}, {secs(0.3), 3}, {secs(1), 4},
		{secs(1.2), 5}, {secs(2.49), 7}, {secs(4), 10}, {secs(4.01), 11}, {secs(9), 13}, {secs(119), 17},
		{secs(120), 17}, {secs(120) + 1, NumBounds}, {time.Hour, NumBounds},
	} {
		var h Histogram
		h.Observe(tc.d)
		s := h.Snapshot()
		if s.Count != 1 {
			t.Fatalf("%v: count %d", tc.d, s.Count)
		}
		for i, c := range s.Cumulative {
			want := uint64(0)
			if i >= tc.want {
				want = 1
			}
			if c != want {
				t.Errorf("%v: le %g counts %d; want %d (bucket %d)", tc.d, Bounds[i], c, want, tc.want)
			}
		}
	}
}

func TestSnapshotSumCountCumulative(t *testing.T) {
	var h Histogram
	for _, s := range []float64{0.2, 0.7, 1.4, 1.4, 3.2, 200} {
		h.Observe(secs(s))
	}
	s := h.Snapshot()
	if s.Count != 6 || math.Abs(s.Sum-206.9) > 1e-6 {
		t.Errorf("count %d sum %g; want 6 and 206.9", s.Count, s.Sum)
	}
	want := map[float64]uint64{0.05: 0, 0.1: 0, 0.25: 1, 0.5: 1, 1: 2, 1.5: 4, 2: 4, 2.5: 4, 3: 4, 3.5: 5, 4: 5, 5: 5, 7.5: 5, 10: 5, 15: 5, 30: 5, 60: 5, 120: 5}
	got := s.Buckets()
	if len(got) != len(want) {
		t.Fatalf("Buckets() has %d bounds; want %d", len(got), len(want))
	}
	for le, n := range want {
		if got[le] != n {
			t.Errorf("le %g: %d; want %d", le, got[le], n)
		}
	}
	var nilH *Histogram
	nilH.Observe(time.Second) // no panic
	if nilH.Snapshot().Count != 0 {
		t.Error("a nil histogram counted something")
	}
}

// Quantile interpolates inside the bucket the rank falls in, as
// histogram_quantile does, and stays within that bucket's bounds.
func TestQuantile(t *testing.T) {
	var h Histogram
	if got := h.Snapshot().Quantile(0.5); got != 0 {
		t.Errorf("empty: %g; want 0", got)
	}
	// 100 observations: 50 in (1, 1.5], 40 in (1.5, 2], 10 in (4, 5].
	for range 50 {
		h.Observe(secs(1.2))
	}
	for range 40 {
		h.Observe(secs(1.8))
	}
	for range 10 {
		h.Observe(secs(4.5))
	}
	s := h.Snapshot()
	for _, tc := range []struct{ q, want float64 }{
		{0, 1},       // the lower bound of the first non-empty bucket
		{0.25, 1.25}, // rank 25 of 50 in (1, 1.5]
		{0.5, 1.5},
		{0.7, 1.75}, // rank 70: 20 of 40 in (1.5, 2]
		{0.95, 4.5}, // rank 95: 5 of 10 in (4, 5]
		{0.99, 4.9},
		{1, 5},
		{2, 5}, // clamped
	} {
		if got := s.Quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Quantile(%g) = %g; want %g", tc.q, got, tc.want)
		}
	}
	if s.P50 != s.Quantile(0.5) || s.P95 != s.Quantile(0.95) || s.P99 != s.Quantile(0.99) {
		t.Errorf("P50/P95/P99 %g/%g/%g differ from Quantile", s.P50, s.P95, s.P99)
	}
	// Above the last bound: the last bound, as Prometheus answers.
	var slow Histogram
	slow.Observe(10 * time.Minute)
	if got := slow.Snapshot().Quantile(0.5); got != 120 {
		t.Errorf("all above the last bound: %g; want 120", got)
	}
}

// Concurrent observers lose nothing (run with -race).
func TestConcurrentObserve(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				h.Observe(time.Duration(g*1000+i) * time.Millisecond)
				if i%100 == 0 {
					_ = h.Snapshot()
				}
			}
		}()
	}
	wg.Wait()
	s := h.Snapshot()
	if s.Count != 8000 {
		t.Errorf("count %d; want 8000", s.Count)
	}
	// Sum of 0..7999 ms.
	if want := 7999.0 * 8000 / 2 / 1000; math.Abs(s.Sum-want) > 1e-6 {
		t.Errorf("sum %g; want %g", s.Sum, want)
	}
}

func TestObserveAllocatesNothing(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(1000, func() { h.Observe(1700 * time.Millisecond) }); n != 0 {
		t.Errorf("Observe allocates %g times", n)
	}
}

func BenchmarkObserve(b *testing.B) {
	var h Histogram
	ds := []time.Duration{secs(0.03), secs(0.4), secs(1.3), secs(2.2), secs(3.7), secs(8), secs(45), secs(300)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Observe(ds[i%len(ds)])
	}
}

// Every worker observing into the same histogram at once: the delivery
// workers of several targets, or the pollers of several accounts.
func BenchmarkObserveParallel(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := secs(1.3)
		for pb.Next() {
			h.Observe(d)
		}
	})
}

func BenchmarkSnapshot(b *testing.B) {
	var h Histogram
	for i := range 1000 {
		h.Observe(time.Duration(i) * 10 * time.Millisecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = h.Snapshot()
	}
}
