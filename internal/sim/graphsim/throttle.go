package graphsim

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// throttle is one of Graph's per-(tenant, app) limits as a sliding window: the
// costs admitted within any window add up to at most limit. The tenant is fixed
// per Server, so the key is the app's client id. Each app has its own lock: apps
// never wait for each other, and the presence state is not behind any of these
// locks.
//
// The simulator has two: presence (Server.throttle: every request costs 1;
// the getPresencesByUserId page gives 1,500 requests per 30 s per application
// per tenant) and the directory (Server.dirThrottle: resource units per 10 s,
// see directoryCost).
type throttle struct {
	limit  atomic.Int64 // negative: off (requests are admitted but still counted)
	window time.Duration

	mu   sync.RWMutex
	apps map[string]*appWindow
}

type appWindow struct {
	mu    sync.Mutex
	times []int64 // admission times (UnixNano), oldest first, from head on
	costs []int32 // the cost admitted at times[i]
	head  int
	sum   int64 // the costs from head on
	max   int64 // the largest sum seen
}

func (t *throttle) init(limit int, window time.Duration) {
	t.limit.Store(int64(limit))
	t.window = window
	t.apps = map[string]*appWindow{}
}

func (t *throttle) get(app string) *appWindow {
	t.mu.RLock()
	w := t.apps[app]
	t.mu.RUnlock()
	if w != nil {
		return w
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if w = t.apps[app]; w == nil {
		n := min(max(t.limit.Load(), 64), 1<<16)
		w = &appWindow{times: make([]int64, 0, n), costs: make([]int32, 0, n)}
		t.apps[app] = w
	}
	return w
}

// admit charges cost to app at now, or refuses it and says how long until
// enough of what was admitted leaves the window for cost to fit. A cost above
// the limit is charged as the limit (it fits an empty window). With the
// throttle off (negative limit) every request is admitted but still counted,
// so maxInWindow shows how hard a client pushed.
func (t *throttle) admit(app string, now time.Time, cost int) (ok bool, retryAfter time.Duration) {
	w := t.get(app)
	ns := now.UnixNano()
	cutoff := ns - int64(t.window)
	limit := t.limit.Load()
	c := int64(cost)
	if limit > 0 {
		c = min(c, limit)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.head < len(w.times) && w.times[w.head] <= cutoff {
		w.sum -= int64(w.costs[w.head])
		w.head++
	}
	if w.head > 0 && w.head >= len(w.times)/2 {
		n := copy(w.times, w.times[w.head:])
		copy(w.costs, w.costs[w.head:])
		w.times, w.costs, w.head = w.times[:n], w.costs[:n], 0
	}
	if limit >= 0 && w.sum+c > limit {
		need, i := w.sum+c-limit, w.head
		for ; i < len(w.times) && need > 0; i++ {
			need -= int64(w.costs[i])
		}
		if need > 0 || i == w.head { // a limit of 0 never admits
			return false, t.window
		}
		return false, time.Duration(w.times[i-1] - cutoff)
	}
	w.times = append(w.times, ns)
	w.costs = append(w.costs, int32(c))
	w.sum += c
	w.max = max(w.max, w.sum)
	return true, 0
}

func (t *throttle) maxInWindow() map[string]int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make(map[string]int, len(t.apps))
	for app, w := range t.apps {
		w.mu.Lock()
		out[app] = int(w.max)
		w.mu.Unlock()
	}
	return out
}

func (t *throttle) resetMax() {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, w := range t.apps {
		w.mu.Lock()
		w.max = w.sum
		w.mu.Unlock()
	}
}

// retryAfterSeconds is wait as Retry-After gives it: whole seconds, at least 1.
func retryAfterSeconds(wait time.Duration) int {
	return max(int(math.Ceil(wait.Seconds())), 1)
}
