package write

import (
	"slices"
	"time"
)

// latencies keeps the last samples of the time from a PBX state's first sight
// to Graph accepting its setPresence.
type latencies struct {
	samples []time.Duration // a ring of the last maxSamples
	next    int
	n       int
}

const maxSamples = 1024

func (l *latencies) add(d time.Duration) {
	if l.samples == nil {
		l.samples = make([]time.Duration, maxSamples)
	}
	l.samples[l.next] = d
	l.next = (l.next + 1) % maxSamples
	l.n++
}

// LatencyReport is the percentiles of the last samples.
type LatencyReport struct {
	Samples       int           `json:"samples"`
	P50, P95, P99 time.Duration `json:"-"`
	P50Ms         float64       `json:"p50Ms"`
	P95Ms         float64       `json:"p95Ms"`
	P99Ms         float64       `json:"p99Ms"`
}

func (l *latencies) report() LatencyReport {
	k := min(l.n, maxSamples)
	if k == 0 {
		return LatencyReport{}
	}
	s := slices.Clone(l.samples[:k])
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(k-1, int(q*float64(k)))] }
	r := LatencyReport{Samples: l.n, P50: at(0.50), P95: at(0.95), P99: at(0.99)}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	r.P50Ms, r.P95Ms, r.P99Ms = ms(r.P50), ms(r.P95), ms(r.P99)
	return r
}
