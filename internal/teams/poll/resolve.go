package poll

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
)

// A users-file UPN is resolved to a Graph object id in up to three steps, each
// asking only for what the step before did not find:
//
//  1. $filter=userPrincipalName in (...): 15 values a filter, 20 filters a
//     $batch, so 300 users a request;
//  2. the same on mail: guests (whose UPN is name_domain#EXT#@tenant) and users
//     whose UPN is not their address, as the PBX's directory often knows them;
//  3. GET /users/{upn}, 20 a $batch: what no filter can find (a UPN a filter
//     literal cannot carry).
//
// What no step finds is unknown (logged once by name). Requests go out at most
// ResolveRate a second, resolveInFlight at a time; a 429 (of the $batch or of
// its items) pauses every lookup for its Retry-After. Each answer is applied as
// it comes, so polling starts with the first 300 users, not after the last.
type lookupStep struct {
	name string
	per  int  // values a request
	mail bool // finds users by their mail address, not their UPN
	call func(context.Context, []string) (graph.Lookup, error)
}

func (p *Poller) lookupSteps() []lookupStep {
	return []lookupStep{
		{"userPrincipalName filter", graph.MaxLookup, false, p.o.Graph.FindByUPN},
		{"mail filter", graph.MaxLookup, true, p.o.Graph.FindByMail},
		{"lookup by UPN", graph.MaxBatch, false, p.o.Graph.LookupUPNs},
	}
}

// resolveInFlight is how many lookup requests may be under way at once: Graph
// takes a second or so to answer a $batch of 20 filters, so one at a time would
// hold the rate far below ResolveRate.
const resolveInFlight = 4

// resolveTries is how often a failing lookup request is tried before its users
// are left unresolved until resolveRetryWait later (the other users are polled
// meanwhile), and resolveTryWait the wait between two tries. Throttling is not
// a failure: a throttled request is tried again after its Retry-After, however
// often that takes.
const (
	resolveTries     = 3
	resolveTryWait   = 5 * time.Second
	resolveRetryWait = time.Minute
	// resolveProgressEvery is how often a long resolve logs its progress.
	resolveProgressEvery = 5 * time.Second
)

// resolveJob is one request's worth of values of one step.
type resolveJob struct {
	values []string
	tries  int
}

// resolver paces the lookup requests of one resolve.
type resolver struct {
	p    *Poller
	pace time.Duration

	mu    sync.Mutex
	next  time.Time // earliest start of the next request
	pause time.Time // a 429's Retry-After: no request before
}

// slot waits until the next request may go out.
func (r *resolver) slot(ctx context.Context) error {
	for {
		r.mu.Lock()
		now := r.p.o.Clock.Now()
		at := now
		if r.next.After(at) {
			at = r.next
		}
		if r.pause.After(at) {
			at = r.pause
		}
		if !at.After(now) {
			r.next = now.Add(r.pace)
			r.mu.Unlock()
			return nil
		}
		r.mu.Unlock()
		if err := r.p.o.Clock.Sleep(ctx, at.Sub(now)); err != nil {
			return err
		}
	}
}

func (r *resolver) pauseFor(d time.Duration) {
	r.mu.Lock()
	if t := r.p.o.Clock.Now().Add(d); t.After(r.pause) {
		r.pause = t
	}
	r.mu.Unlock()
}

// resolve looks up upns (lower case, from the users file) and applies what it
// finds as each answer arrives (an id already known is replaced only when Graph
// names another). It returns only when every value is found, unknown or left
// for later, or ctx ends.
func (p *Poller) resolve(ctx context.Context, upns []string) error {
	if len(upns) == 0 {
		return nil
	}
	r := &resolver{p: p, pace: time.Duration(float64(time.Second) / p.o.ResolveRate)}
	start := p.o.Clock.Now()
	p.o.Logger.Info(fmt.Sprintf("Resolving %d users to Graph object ids", len(upns)))
	var byMail atomic.Int64
	stop := make(chan struct{})
	go p.logProgress(ctx, stop, len(upns))
	defer close(stop)

	todo := upns
	var given []string // left for later: Graph kept refusing their lookup
	for _, st := range p.lookupSteps() {
		if len(todo) == 0 {
			break
		}
		missing, failed, err := p.resolveStep(ctx, r, st, todo, &byMail)
		if err != nil {
			return err
		}
		given = append(given, failed...)
		todo = missing
	}
	p.markUnknown(todo)
	p.mu.Lock()
	if len(given) > 0 {
		p.resolveRetry = p.o.Clock.Now().Add(resolveRetryWait)
	}
	p.st.Unresolved = len(given)
	resolved := p.st.Resolved
	p.mu.Unlock()
	msg := fmt.Sprintf("Resolved %d of %d users in %s", resolved, p.st.Users, p.o.Clock.Now().Sub(start).Round(time.Millisecond))
	if n := byMail.Load(); n > 0 {
		msg += fmt.Sprintf(" (%d by their mail address)", n)
	}
	if len(todo) > 0 {
		msg += fmt.Sprintf("; %d not found in Teams", len(todo))
	}
	if len(given) > 0 {
		msg += fmt.Sprintf("; %d left for later (Graph refused their lookup)", len(given))
	}
	p.o.Logger.Info(msg)
	return nil
}

// logProgress logs how far a long resolve has come, every resolveProgressEvery.
func (p *Poller) logProgress(ctx context.Context, stop <-chan struct{}, total int) {
	t := p.o.Clock.NewTicker(resolveProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C():
			p.mu.Lock()
			n := p.st.Resolved
			p.mu.Unlock()
			p.o.Logger.Info(fmt.Sprintf("Resolving users: %d of %d resolved", n, total))
		}
	}
}

// resolveStep runs one step over values: it returns the values the step did not
// find (for the next step) and those whose requests failed for good.
func (p *Poller) resolveStep(ctx context.Context, r *resolver, st lookupStep, values []string, byMail *atomic.Int64) (missing, failed []string, err error) {
	var jobs []resolveJob
	for len(values) > 0 {
		n := min(len(values), st.per)
		jobs = append(jobs, resolveJob{values: values[:n:n]})
		values = values[n:]
	}
	// Each job taken out puts back at most one (its retries), so the channel
	// never holds more than it started with.
	queue := make(chan resolveJob, len(jobs))
	for _, j := range jobs {
		queue <- j
	}
	var outstanding atomic.Int64
	outstanding.Store(int64(len(jobs)))
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range min(resolveInFlight, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var j resolveJob
				var ok bool
				select {
				case <-ctx.Done():
					return
				case j, ok = <-queue:
					if !ok {
						return
					}
				}
				again, miss, fail, err := p.resolveOne(ctx, r, st, j, byMail)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
				mu.Lock()
				missing = append(missing, miss...)
				failed = append(failed, fail...)
				mu.Unlock()
				if len(again.values) > 0 {
					outstanding.Add(1)
					queue <- again
				}
				if outstanding.Add(-1) == 0 {
					close(queue)
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	return missing, failed, firstErr
}

// resolveOne sends one job's request and applies its answer. It returns what
// to ask again (throttled or transiently failed values), what the step did not
// find, and the values given up on after resolveTries failures. Its error is
// only the state file's.
func (p *Poller) resolveOne(ctx context.Context, r *resolver, st lookupStep, j resolveJob, byMail *atomic.Int64) (again resolveJob, missing, failed []string, err error) {
	if err := r.slot(ctx); err != nil {
		return resolveJob{}, nil, nil, nil
	}
	rctx, cancel := context.WithTimeout(ctx, p.o.RequestTimeout)
	lk, err := st.call(rctx, j.values)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return resolveJob{}, nil, nil, nil
		}
		p.noteError(fmt.Errorf("resolve users (%s): %w", st.name, err))
		var te *graph.ThrottledError
		var ie *graph.ItemError
		if errors.As(err, &ie) && st.per == graph.MaxLookup { // a filter step
			// A filter Graph would not take (a 400, or a 403 for one of its
			// requests): the next step asks for these users another way.
			return resolveJob{}, j.values, nil, nil
		}
		if errors.As(err, &te) {
			wait := resolveTryWait
			if te.HasRetryAfter {
				wait = te.RetryAfter
			}
			r.pauseFor(wait)
			return j, nil, nil, nil
		}
		if j.tries+1 >= resolveTries {
			return resolveJob{}, nil, j.values, nil
		}
		r.pauseFor(resolveTryWait)
		return resolveJob{values: j.values, tries: j.tries + 1}, nil, nil, nil
	}
	if len(lk.Retry) > 0 {
		tries := j.tries
		wait := lk.RetryAfter
		if wait == 0 {
			// Failed items without Retry-After are failures, not throttling.
			tries++
			wait = resolveTryWait
		}
		r.pauseFor(wait)
		if tries >= resolveTries {
			failed = lk.Retry
		} else {
			again = resolveJob{values: lk.Retry, tries: tries}
		}
	}
	for _, v := range lk.Ambiguous {
		p.o.Logger.Warn("Two or more Teams users have this mail address; give the user's UPN in the users file", "upn", v, "line", p.o.Users[p.byUPN[v]].Line)
	}
	if st.mail {
		byMail.Add(int64(len(lk.Found)))
	}
	return again, lk.Missing, failed, p.applyFound(lk.Found)
}

// applyFound records the object ids found (keyed by the users file's UPN), in
// memory and in the state file, and makes their users ready to poll.
func (p *Poller) applyFound(found map[string]graph.User) error {
	if len(found) == 0 {
		return nil
	}
	now := p.o.Clock.Now().UTC()
	entries := make(map[string][]byte, len(found))
	p.mu.Lock()
	for upn, u := range found {
		i, ok := p.byUPN[upn]
		if !ok {
			continue
		}
		p.setID(i, u.ID)
		entries[p.o.Users[i].UPN] = encodeResolved(resolved{ID: u.ID, UPN: upn, ResolvedAt: now})
	}
	p.mu.Unlock()
	p.wake()
	return p.o.Store.PutMany(store.BucketUserIDs, entries)
}

// markUnknown records the UPNs no lookup found: logged once by name, kept in
// the state file (so a restart does not ask again until the next re-resolve),
// and no longer polled if they were.
func (p *Poller) markUnknown(upns []string) {
	if len(upns) == 0 {
		return
	}
	now := p.o.Clock.Now().UTC()
	entries := make(map[string][]byte, len(upns))
	p.mu.Lock()
	for _, upn := range upns {
		i, ok := p.byUPN[upn]
		if !ok {
			continue
		}
		if !p.unknown[i] {
			p.o.Logger.Warn("Teams user not found; check the UPN in the users file", "upn", upn, "line", p.o.Users[i].Line)
		}
		p.unknown[i] = true
		p.setID(i, "")
		entries[p.o.Users[i].UPN] = encodeResolved(resolved{UPN: upn, ResolvedAt: now, NotFound: true})
	}
	p.st.Unknown = p.st.Unknown[:0]
	for i := range p.unknown {
		p.st.Unknown = append(p.st.Unknown, p.o.Users[i].UPN)
	}
	p.mu.Unlock()
	if err := p.o.Store.PutMany(store.BucketUserIDs, entries); err != nil {
		p.noteError(err)
	}
}
