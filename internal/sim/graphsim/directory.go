package graphsim

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// User is one person in the simulated directory, as GET /v1.0/users/{id} shows it.
type User struct {
	ID          string `json:"id"`
	UPN         string `json:"userPrincipalName"`
	Mail        string `json:"mail"`
	DisplayName string `json:"displayName"`
}

// Change is one presence change of one user, made by the pattern engine or by
// SetPresence. At is when the new presence became visible through Graph.
type Change struct {
	UPN          string    `json:"upn"`
	ID           string    `json:"id"`
	Availability string    `json:"availability"`
	Activity     string    `json:"activity"`
	At           time.Time `json:"at"`
}

// ErrUnknownUser means the UPN (or id) is not in the simulated directory.
var ErrUnknownUser = errors.New("user not in the simulated directory")

// changeLogLimit bounds the change record: with 50,000 users changing 6 times an
// hour that is about 3 hours of history in 16 MB. Older changes are dropped.
const changeLogLimit = 1_000_000

// pair is one (availability, activity) combination with its Graph JSON already
// rendered, so a presence reply is built by appending bytes, not by encoding.
type pair struct {
	availability string
	activity     string
	outOfOffice  bool
	// rank orders pairs for aggregation (rankOf): DoNotDisturb > Busy >
	// Available > Away > anything else.
	rank int
	// tail is everything of a presence object after the sequenceNumber value
	// (which follows the id): `","availability":"Busy",...}}`.
	tail []byte
}

func newPair(availability, activity string) *pair {
	ooo := strings.EqualFold(activity, "OutOfOffice")
	av, _ := json.Marshal(availability)
	ac, _ := json.Marshal(activity)
	tail := make([]byte, 0, 160)
	tail = append(tail, `","availability":`...)
	tail = append(tail, av...)
	tail = append(tail, `,"activity":`...)
	tail = append(tail, ac...)
	tail = append(tail, `,"statusMessage":null,"outOfOfficeSettings":{"message":null,"isOutOfOffice":`...)
	if ooo {
		tail = append(tail, "true}}"...)
	} else {
		tail = append(tail, "false}}"...)
	}
	return &pair{availability: availability, activity: activity, outOfOffice: ooo, rank: rankOf(availability), tail: tail}
}

// pairTable interns pairs. Readers load the list without a lock; the rare writer
// (a SetPresence with a pair not seen before) copies it.
type pairTable struct {
	mu    sync.Mutex
	index map[[2]string]uint32
	list  atomic.Pointer[[]*pair]
}

func newPairTable(initial [][2]string) *pairTable {
	t := &pairTable{index: map[[2]string]uint32{}}
	list := make([]*pair, 0, len(initial))
	t.list.Store(&list)
	for _, p := range initial {
		t.intern(p[0], p[1])
	}
	return t
}

func (t *pairTable) get(i uint32) *pair { return (*t.list.Load())[i] }

func (t *pairTable) intern(availability, activity string) uint32 {
	key := [2]string{availability, activity}
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.index[key]; ok {
		return i
	}
	old := *t.list.Load()
	list := make([]*pair, len(old), len(old)+1)
	copy(list, old)
	list = append(list, newPair(availability, activity))
	i := uint32(len(list) - 1)
	t.index[key] = i
	t.list.Store(&list)
	return i
}

// directory is the users and their presence. The user tables never change after
// New, so lookups take no lock; each user's shown presence is one atomic word, so
// Graph reads never wait for the pattern engine, SetPresence or a presence write.
//
// A user's shown presence (state) is the aggregate of their Teams client state
// (client: what the engine and SetPresence set) and the live presence sessions
// applications hold through setPresence (sessions); see aggregate.
type directory struct {
	users  []User
	ids    idIndex // by object id, for getPresencesByUserId
	byID   map[string]int32
	byUPN  map[string]int32 // lower case
	byMail map[string]int32 // lower case: the first user with that mail
	// sameMail lists, by lower-case mail, the users after the first that have
	// that mail too (Options.ExtraUsers may give two users one mail).
	sameMail map[string][]int32

	pairs *pairTable
	// state is what Graph shows per user, one word so a reader gets a pair
	// and its sequence number together: the pair index in the low 32 bits,
	// the user's change count in the high 32 (see shownWord).
	state     []atomic.Uint64
	changedAt []atomic.Int64 // UnixNano of the last change per user; 0 = never
	// seqBase is added to a user's change count to make the sequenceNumber
	// Graph shows: wall-clock nanoseconds at New (the low seqLowBits clear),
	// so a tenant started later (a millisecond or more) numbers after an
	// earlier one even on a fake clock. seqHead is `","sequenceNumber":"` and
	// seqBase's hex digits above those bits.
	seqBase uint64
	seqHead []byte
	// stale holds, for ServeStale, the older word the next read of a user
	// shows (staleMu); staleN counts them, so reads check with one atomic load.
	staleMu sync.Mutex
	stale   map[int32]uint64
	staleN  atomic.Int32

	changeMu     sync.Mutex
	prev         []uint64 // the state word before the last change per user; changeMu
	client       []uint32 // the user's own (Teams client) pair index; changeMu
	sessions     map[int32][]*appSession
	nextExpiry   atomic.Int64 // UnixNano of the earliest session expiry; MaxInt64 = none
	changes      []changeRec  // chronological
	totalChanges atomic.Int64
}

type changeRec struct {
	user int32
	pair uint32
	at   int64 // UnixNano
}

// userID derives a stable GUID-shaped object id from tenant and UPN, so every run
// (and every test) sees the same ids.
func userID(tenant, upn string) string {
	h := sha256.Sum256([]byte(strings.ToLower(tenant) + "/" + strings.ToLower(upn)))
	h[6] = h[6]&0x0f | 0x40 // version 4 shape
	h[8] = h[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// newDirectory builds the n generated users user00001@<domain>... and then the
// extra users (Options.ExtraUsers), whose ids are derived the same way.
func newDirectory(tenant string, domains []string, n int, extra []User, pairs *pairTable) (*directory, error) {
	total := n + len(extra)
	d := &directory{
		users:     make([]User, 0, total),
		byID:      make(map[string]int32, total),
		byUPN:     make(map[string]int32, total),
		byMail:    make(map[string]int32, total),
		sameMail:  map[string][]int32{},
		pairs:     pairs,
		state:     make([]atomic.Uint64, total),
		changedAt: make([]atomic.Int64, total),
		seqBase:   uint64(time.Now().UnixNano()) &^ (1<<seqLowBits - 1),
		stale:     map[int32]uint64{},
		prev:      make([]uint64, total),
		client:    make([]uint32, total),
		sessions:  map[int32][]*appSession{},
	}
	d.nextExpiry.Store(math.MaxInt64)
	d.seqHead = fmt.Appendf(nil, `","sequenceNumber":"%011X`, d.seqBase>>seqLowBits)
	for i := range n {
		upn := fmt.Sprintf("user%05d@%s", i+1, domains[i%len(domains)])
		d.add(User{ID: userID(tenant, upn), UPN: upn, Mail: upn, DisplayName: fmt.Sprintf("Sim User %05d", i+1)})
	}
	for _, u := range extra {
		if _, dup := d.byUPN[strings.ToLower(u.UPN)]; dup {
			return nil, fmt.Errorf("graphsim: ExtraUsers: the UPN %q is in the directory already", u.UPN)
		}
		u.ID = userID(tenant, u.UPN)
		d.add(u)
	}
	d.ids = newIDIndex(d.users)
	return d, nil
}

// add appends user u to the tables; only newDirectory calls it.
func (d *directory) add(u User) {
	i := int32(len(d.users))
	d.users = append(d.users, u)
	d.byID[u.ID] = i
	d.byUPN[strings.ToLower(u.UPN)] = i
	if u.Mail == "" {
		return
	}
	mail := strings.ToLower(u.Mail)
	if _, taken := d.byMail[mail]; taken {
		d.sameMail[mail] = append(d.sameMail[mail], i)
		return
	}
	d.byMail[mail] = i
}

// withMail appends to out the users whose mail is mail (case-insensitive), in
// directory order.
func (d *directory) withMail(mail string, out []int32) []int32 {
	mail = strings.ToLower(mail)
	i, ok := d.byMail[mail]
	if !ok {
		return out
	}
	return append(append(out, i), d.sameMail[mail]...)
}

// lookup finds a user by object id or UPN (case-insensitive), as Graph's
// /users/{id | userPrincipalName} does.
func (d *directory) lookup(key string) (int32, bool) {
	if i, ok := d.byID[key]; ok {
		return i, true
	}
	if i, ok := d.byID[strings.ToLower(key)]; ok {
		return i, true
	}
	i, ok := d.byUPN[strings.ToLower(key)]
	return i, ok
}

// lookupID finds a user by object id only, as getPresencesByUserId does.
func (d *directory) lookupID(id string) (int32, bool) {
	if i, ok := d.byID[id]; ok {
		return i, true
	}
	i, ok := d.byID[strings.ToLower(id)]
	return i, ok
}

// guidLen is the length of an object id written as a GUID.
const guidLen = 36

// idIndex finds a user by object id as the directory writes it, for
// getPresencesByUserId, the hottest path (650 ids a request): an
// open-addressing table, at most half full, of the ids' bytes. A hit reads
// one slot instead of a map's control word, key header and key bytes, and the
// reply can copy the asked id (already in the cache). The directory's ids are
// hex of SHA-256 output (userID), so their first eight bytes hash well. Ids
// it does not hold (another spelling: upper case) go to byID.
type idIndex struct {
	shift uint
	slots []idSlot
}

type idSlot struct {
	id   [guidLen]byte
	user int32 // index + 1; 0 is an empty slot
}

func newIDIndex(users []User) idIndex {
	bits := uint(4)
	for 1<<bits < 2*len(users) {
		bits++
	}
	x := idIndex{shift: 64 - bits, slots: make([]idSlot, 1<<bits)}
	mask := uint64(len(x.slots) - 1)
	for i, u := range users {
		if len(u.ID) != guidLen {
			continue // userID makes every id; byID has it anyway
		}
		j := x.home([]byte(u.ID))
		for x.slots[j].user != 0 {
			j = (j + 1) & mask
		}
		copy(x.slots[j].id[:], u.ID)
		x.slots[j].user = int32(i) + 1
	}
	return x
}

// home is the slot where id's probe starts (Fibonacci hashing of its first
// eight bytes); id is guidLen bytes long.
func (x *idIndex) home(id []byte) uint64 {
	v := uint64(id[0]) | uint64(id[1])<<8 | uint64(id[2])<<16 | uint64(id[3])<<24 |
		uint64(id[4])<<32 | uint64(id[5])<<40 | uint64(id[6])<<48 | uint64(id[7])<<56
	return (v * 0x9E3779B97F4A7C15) >> x.shift
}

// find returns the user whose id is id, byte for byte.
func (x *idIndex) find(id []byte) (int32, bool) {
	if len(id) != guidLen {
		return 0, false
	}
	mask := uint64(len(x.slots) - 1)
	for j := x.home(id); ; j = (j + 1) & mask {
		sl := &x.slots[j]
		if sl.user == 0 {
			return 0, false
		}
		if string(sl.id[:]) == string(id) {
			return sl.user - 1, true
		}
	}
}

// lookupIDBytes is lookupID without allocating on a hit.
func (d *directory) lookupIDBytes(id []byte) (int32, bool) {
	if i, ok := d.byID[string(id)]; ok {
		return i, true
	}
	i, ok := d.byID[strings.ToLower(string(id))]
	return i, ok
}

// init sets user u's client state and shown presence to p before the tenant
// serves (no change is recorded).
func (d *directory) init(u int32, p uint32) {
	d.client[u] = p
	d.state[u].Store(uint64(p))
}

// A state word: pair index (low 32 bits) and change count (high 32).
func pairOf(word uint64) uint32    { return uint32(word) }
func changesOf(word uint64) uint64 { return word >> 32 }

// shownPair is the pair user u shows now.
func (d *directory) shownPair(u int32) uint32 { return pairOf(d.state[u].Load()) }

// shownWord is the state word a presence read of user u answers: the current
// one, or once after ServeStale the older one. stale is whether any is
// pending (d.staleN.Load() != 0), loaded once per reply.
func (d *directory) shownWord(u int32, stale bool) uint64 {
	if stale {
		d.staleMu.Lock()
		w, ok := d.stale[u]
		if ok {
			delete(d.stale, u)
			d.staleN.Add(-1)
		}
		d.staleMu.Unlock()
		if ok {
			return w
		}
	}
	return d.state[u].Load()
}

// seqLowBits: a user's change count below 1<<seqLowBits (a million changes)
// renders as five hex digits after the tenant's constant prefix (seqHead).
const seqLowBits = 20

// sequence is the sequenceNumber of a state word: 16 upper-case hex digits
// of seqBase plus the change count, so numbers sort as strings in the order
// of the changes. Graph's presence resource carries such a stamp ("a lower
// one is older"); its format is Graph's business, only the order counts.
func (d *directory) sequence(word uint64) string {
	return fmt.Sprintf("%016X", d.seqBase+changesOf(word))
}

// appendSequenceField appends `","sequenceNumber":"` and the sequence of
// word (the caller closes the string). It runs for every presence of every
// reply, so it copies the prefix rendered at New (seqBase has its low
// seqLowBits clear) and renders only the change count's five digits.
func (d *directory) appendSequenceField(b []byte, word uint64) []byte {
	const digits = "0123456789ABCDEF"
	n := changesOf(word)
	if n >= 1<<seqLowBits {
		b = append(b, `","sequenceNumber":"`...)
		return append(b, d.sequence(word)...)
	}
	b = append(b, d.seqHead...)
	return append(b, digits[n>>16&15], digits[n>>12&15], digits[n>>8&15], digits[n>>4&15], digits[n&15])
}

// setClient sets user u's own (Teams client) state to p at time at and shows the
// aggregate with u's sessions; the caller holds changeMu. It reports whether
// what Graph shows changed.
func (d *directory) setClient(u int32, p uint32, at int64) bool {
	d.client[u] = p
	return d.show(u, d.aggregate(u), at)
}

// show makes user u show pair p from time at and records the change; the caller
// holds changeMu. It reports false (and records nothing) when the presence is
// unchanged. Every change Graph shows goes through here, so the change record,
// changedAt and Stats.Changes see sessions come and go as well.
func (d *directory) show(u int32, p uint32, at int64) bool {
	old := d.state[u].Load()
	if pairOf(old) == p {
		return false
	}
	d.prev[u] = old
	d.state[u].Store((changesOf(old)+1)<<32 | uint64(p))
	d.changedAt[u].Store(at)
	if len(d.changes) >= changeLogLimit {
		keep := changeLogLimit / 2
		n := copy(d.changes, d.changes[len(d.changes)-keep:])
		d.changes = d.changes[:n]
	}
	d.changes = append(d.changes, changeRec{user: u, pair: p, at: at})
	d.totalChanges.Add(1)
	return true
}

func (d *directory) changesSince(since time.Time) []Change {
	s := since.UnixNano()
	if since.IsZero() {
		s = -1 << 63
	}
	d.changeMu.Lock()
	defer d.changeMu.Unlock()
	i := sort.Search(len(d.changes), func(i int) bool { return d.changes[i].at > s })
	out := make([]Change, 0, len(d.changes)-i)
	for _, c := range d.changes[i:] {
		u := &d.users[c.user]
		p := d.pairs.get(c.pair)
		out = append(out, Change{UPN: u.UPN, ID: u.ID, Availability: p.availability, Activity: p.activity, At: time.Unix(0, c.at).UTC()})
	}
	return out
}
