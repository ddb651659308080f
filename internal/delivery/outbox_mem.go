package delivery

import (
	"slices"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/users"
)

// MemOutbox is an Outbox in memory, for tests of what sits on an Outbox: it
// passes the same suite as BoltOutbox and forgets everything when dropped.
func MemOutbox() Outbox {
	return &memOutbox{pending: map[string]map[string]Item{}, delivered: map[string]map[string]Delivered{}, seq: map[string]uint64{}}
}

type memOutbox struct {
	mu        sync.Mutex
	pending   map[string]map[string]Item      // target -> UPN -> item
	delivered map[string]map[string]Delivered // target -> UPN -> what it accepted
	seq       map[string]uint64               // target -> last Seq given out
}

func (o *memOutbox) Enqueue(targets []string, accepts []func(users.User) bool, items []Item) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for ti, t := range targets {
		p := o.pending[t]
		if p == nil {
			p = map[string]Item{}
			o.pending[t] = p
		}
		for _, it := range items {
			if accepts[ti] != nil && !accepts[ti](it.User) {
				continue
			}
			o.seq[t]++
			it.Seq = o.seq[t]
			p[it.User.UPN] = it
		}
	}
	return nil
}

// sortedUPNs lists m's keys in order, as a bbolt cursor walks them.
func sortedUPNs[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (o *memOutbox) Pick(target string, n int, after string, want func(upn string) bool) ([]Item, string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	keys := sortedUPNs(o.pending[target])
	start, _ := slices.BinarySearch(keys, after)
	if start < len(keys) && keys[start] == after {
		start++
	}
	order := keys[start:]
	if after != "" {
		order = append(slices.Clone(order), keys[:start]...)
	}
	var out []Item
	last := after
	for _, upn := range order {
		if len(out) == n {
			break
		}
		if want(upn) {
			out = append(out, o.pending[target][upn])
			last = upn
		}
	}
	return out, last, nil
}

func (o *memOutbox) Settle(target string, accepted []Delivered, dropped []Item) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	removeIfSame := func(upn string, seq uint64) {
		if it, ok := o.pending[target][upn]; ok && it.Seq == seq {
			delete(o.pending[target], upn)
		}
	}
	for _, d := range accepted {
		removeIfSame(d.UPN, d.Seq)
		if o.delivered[target] == nil {
			o.delivered[target] = map[string]Delivered{}
		}
		o.delivered[target][d.UPN] = d
	}
	for _, it := range dropped {
		removeIfSame(it.User.UPN, it.Seq)
	}
	return nil
}

func (o *memOutbox) Pending(target string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending[target])
}

func (o *memOutbox) HasPending(target, upn string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.pending[target][upn]
	return ok
}

func (o *memOutbox) Delivered(target, upn string) (Delivered, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	d, ok := o.delivered[target][upn]
	return d, ok, nil
}

func (o *memOutbox) DeliveredAfter(target, after string, n int, before time.Time) ([]Delivered, string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []Delivered
	last := after
	for _, upn := range sortedUPNs(o.delivered[target]) {
		if len(out) == n {
			break
		}
		if after != "" && upn <= after {
			continue
		}
		last = upn
		if _, pending := o.pending[target][upn]; pending {
			continue
		}
		if d := o.delivered[target][upn]; d.Reason != ReasonRemove && !d.At.After(before) {
			out = append(out, d)
		}
	}
	return out, last, nil
}

func (o *memOutbox) CountDelivered(target string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.delivered[target])
}

func (o *memOutbox) Shown() (map[string]Delivered, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]Delivered{}
	for _, t := range sortedUPNs(o.delivered) {
		for upn, d := range o.delivered[t] {
			if d.Reason != ReasonRemove {
				out[upn] = d
			}
		}
	}
	return out, nil
}
