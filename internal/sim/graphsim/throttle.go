package graphsim

import (
	"sync"
	"time"
)

// throttle is Graph's per-(tenant, app) limit as a sliding window: at most limit
// requests admitted within any window. The getPresencesByUserId page gives 1,500
// requests per 30 s per application per tenant. The tenant is fixed per Server, so
// the key is the app's client id. Each app has its own lock: apps never wait for
// each other, and the presence state is not behind any of these locks.
type throttle struct {
	limit  int
	window time.Duration

	mu   sync.RWMutex
	apps map[string]*appWindow
}

type appWindow struct {
	mu    sync.Mutex
	times []int64 // admission times (UnixNano), oldest first, from head on
	head  int
	max   int
}

func (w *appWindow) len() int { return len(w.times) - w.head }

func (t *throttle) init(limit int, window time.Duration) {
	t.limit, t.window = limit, window
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
		w = &appWindow{times: make([]int64, 0, max(t.limit, 64))}
		t.apps[app] = w
	}
	return w
}

// admit counts a request of app at now, or refuses it and says how long until the
// oldest admitted request leaves the window (a slot frees). With the throttle off
// (negative limit) every request is admitted but still counted, so MaxInWindow
// shows how hard a client pushed.
func (t *throttle) admit(app string, now time.Time) (ok bool, retryAfter time.Duration) {
	w := t.get(app)
	ns := now.UnixNano()
	cutoff := ns - int64(t.window)
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.head < len(w.times) && w.times[w.head] <= cutoff {
		w.head++
	}
	if w.head > 0 && w.head >= len(w.times)/2 {
		n := copy(w.times, w.times[w.head:])
		w.times, w.head = w.times[:n], 0
	}
	if t.limit >= 0 && w.len() >= t.limit {
		return false, time.Duration(w.times[w.head] - cutoff)
	}
	w.times = append(w.times, ns)
	w.max = max(w.max, w.len())
	return true, 0
}

func (t *throttle) maxInWindow() map[string]int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make(map[string]int, len(t.apps))
	for app, w := range t.apps {
		w.mu.Lock()
		out[app] = w.max
		w.mu.Unlock()
	}
	return out
}

func (t *throttle) resetMax() {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, w := range t.apps {
		w.mu.Lock()
		w.max = w.len()
		w.mu.Unlock()
	}
}
