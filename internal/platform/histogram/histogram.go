// Package histogram counts durations into fixed buckets, for the latency
// histograms /metrics exports and the quantiles status shows. Observe is O(1),
// allocates nothing and takes no lock (atomic counters), so the delivery
// workers and pollers call it on every item and request.
package histogram

import (
	"math"
	"sync/atomic"
	"time"
)

// NumBounds is how many finite buckets a Histogram has.
const NumBounds = 18

// Bounds are the buckets' upper bounds in seconds (Prometheus' "le"), the same
// for every histogram: fine below a second for Graph requests and CTI/SIP
// round trips, half-second steps from 1 to 4 s where a Teams change reaches the
// PBX with presencebridge's default 10 s cycle (about half a cycle and a
// request), then coarser up to two minutes for cycles the budget stretches and
// targets that were down. An observation above the last bound counts in Count
// only (the +Inf bucket).
var Bounds = [NumBounds]float64{0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 7.5, 10, 15, 30, 60, 120}

// upper are Bounds as durations, for Observe's comparisons.
var upper = func() (u [NumBounds]time.Duration) {
	for i, b := range Bounds {
		u[i] = time.Duration(b * float64(time.Second))
	}
	return u
}()

// Histogram counts observed durations by bucket. The zero value is ready to use;
// it must not be copied after first use (keep it in a struct held by pointer).
// A nil *Histogram observes nothing.
type Histogram struct {
	counts [NumBounds + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	// sumMicros is the sum of the observations in microseconds: a uint64 of
	// them lasts 580,000 years of summed latency (nanoseconds would overflow
	// within months at 50,000 users' changes).
	sumMicros atomic.Uint64
}

// Observe counts d (negative durations, from a clock stepped back, count as 0).
func (h *Histogram) Observe(d time.Duration) {
	if h == nil {
		return
	}
	d = max(d, 0)
	h.sumMicros.Add(uint64(d / time.Microsecond))
	h.counts[bucket(d)].Add(1)
}

// bucket is the index of the first bound d is at or below (NumBounds: above
// all), by binary search over the fixed bounds.
func bucket(d time.Duration) int {
	lo, hi := 0, NumBounds
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if upper[m] < d {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Snapshot is a histogram's counts at one moment, as status reports them and
// /metrics exports them.
type Snapshot struct {
	// Count is how many durations were observed, Sum their total in seconds.
	Count uint64  `json:"count"`
	Sum   float64 `json:"sumSeconds"`
	// P50, P95 and P99 are Quantile(0.5), Quantile(0.95) and Quantile(0.99) in
	// seconds, worked out when the snapshot was taken (0 while Count is 0).
	P50 float64 `json:"p50Seconds"`
	P95 float64 `json:"p95Seconds"`
	P99 float64 `json:"p99Seconds"`
	// Cumulative[i] counts the observations at or below Bounds[i].
	Cumulative [NumBounds]uint64 `json:"cumulative"`
}

// Snapshot reads the counts. Observations that run at the same time may show
// in Sum and not yet in Count, or the other way round; Count always equals the
// last bucket's count plus the +Inf bucket's.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	if h == nil {
		return s
	}
	var n uint64
	for i := range NumBounds {
		n += h.counts[i].Load()
		s.Cumulative[i] = n
	}
	s.Count = n + h.counts[NumBounds].Load()
	s.Sum = float64(h.sumMicros.Load()) / 1e6
	s.P50, s.P95, s.P99 = s.Quantile(0.5), s.Quantile(0.95), s.Quantile(0.99)
	return s
}

// Quantile estimates the q-quantile (0 <= q <= 1) in seconds from the buckets
// as Prometheus' histogram_quantile does: linear interpolation inside the
// bucket the rank falls in, the last bound if it falls above it, and 0 for an
// empty histogram. So the estimate is never off by more than its bucket's width.
func (s Snapshot) Quantile(q float64) float64 {
	if s.Count == 0 || math.IsNaN(q) {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(s.Count)
	below, lower := uint64(0), 0.0
	for i, c := range s.Cumulative {
		if c > 0 && float64(c) >= rank {
			return lower + (Bounds[i]-lower)*(rank-float64(below))/float64(c-below)
		}
		below, lower = c, Bounds[i]
	}
	return Bounds[NumBounds-1]
}

// Buckets are the cumulative counts keyed by upper bound, as
// prometheus.MustNewConstHistogram takes them.
func (s Snapshot) Buckets() map[float64]uint64 {
	m := make(map[float64]uint64, NumBounds)
	for i, c := range s.Cumulative {
		m[Bounds[i]] = c
	}
	return m
}
