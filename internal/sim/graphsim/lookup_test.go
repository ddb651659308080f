package graphsim_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

// extraUsers are users whose UPN is not their address, a guest, a UPN with a
// quote, two users sharing one mail and one without mail.
var extraUsers = []graphsim.User{
	{UPN: "j.smith@contoso.example", Mail: "john.smith@contoso.example", DisplayName: "John Smith"},
	{UPN: "ann_fabrikam.example#EXT#@contoso.example", Mail: "ann@fabrikam.example", DisplayName: "Ann (Fabrikam)"},
	{UPN: "o'brien@contoso.example", Mail: "Pat.OBrien@Contoso.example", DisplayName: "Pat O'Brien"},
	{UPN: "desk1@contoso.example", Mail: "frontdesk@contoso.example", DisplayName: "Front desk 1"},
	{UPN: "desk2@contoso.example", Mail: "frontdesk@contoso.example", DisplayName: "Front desk 2"},
	{UPN: "room.a@contoso.example", DisplayName: "Room A"},
}

// filterQuery is the path of a filtered users list with filter encoded as
// clients send it (spaces as %20).
func filterQuery(filter, sel string) string {
	q := "/v1.0/users?$filter=" + strings.ReplaceAll(url.QueryEscape(filter), "+", "%20")
	if sel != "" {
		q += "&$select=" + sel
	}
	return q
}

type usersReply struct {
	Context string           `json:"@odata.context"`
	Value   []map[string]any `json:"value"`
}

func (r usersReply) upns() []string {
	var out []string
	for _, v := range r.Value {
		s, _ := v["userPrincipalName"].(string)
		out = append(out, s)
	}
	return out
}

func TestUsersFilter(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 5, ExtraUsers: extraUsers})
	tok := appToken(t, s)
	const guest = "ann_fabrikam.example#EXT#@contoso.example"
	tooMany := "Too many child clauses specified in search filter expression containing 'OR' operators: 16. Max allowed: 15."
	values := func(n int) string {
		v := make([]string, n)
		for i := range v {
			v[i] = fmt.Sprintf("'user%05d@contoso.example'", i+1)
		}
		return strings.Join(v, ",")
	}
	tests := []struct {
		name, filter string
		want         []string // UPNs in directory order; nil with a problem
		problem      string   // a substring of the 400's message
	}{
		{"in", "userPrincipalName in ('user00002@contoso.example','user00001@contoso.example')", []string{"user00001@contoso.example", "user00002@contoso.example"}, ""},
		{"in, spaces", "  userPrincipalName   in   (  'user00003@contoso.example' ,  'nobody@contoso.example'  )  ", []string{"user00003@contoso.example"}, ""},
		{"in, no space before (", "userPrincipalName in('user00003@contoso.example')", []string{"user00003@contoso.example"}, ""},
		{"property and value case", "UserPrincipalName in ('USER00004@CONTOSO.EXAMPLE')", []string{"user00004@contoso.example"}, ""},
		{"eq", "userPrincipalName eq 'user00005@contoso.example'", []string{"user00005@contoso.example"}, ""},
		{"quote in a value", "userPrincipalName eq 'O''Brien@contoso.example'", []string{"o'brien@contoso.example"}, ""},
		{"quote in an in", "userPrincipalName in ('x''@y','o''brien@contoso.example')", []string{"o'brien@contoso.example"}, ""},
		{"guest by UPN", "userPrincipalName eq '" + guest + "'", []string{guest}, ""},
		{"guest by mail", "mail in ('ann@fabrikam.example')", []string{guest}, ""},
		{"UPN is not the mail", "userPrincipalName in ('john.smith@contoso.example')", []string{}, ""},
		{"mail of j.smith", "mail eq 'John.Smith@contoso.example'", []string{"j.smith@contoso.example"}, ""},
		{"mail of two users", "MAIL in ('frontdesk@contoso.example')", []string{"desk1@contoso.example", "desk2@contoso.example"}, ""},
		{"mail case", "mail eq 'pat.obrien@contoso.example'", []string{"o'brien@contoso.example"}, ""},
		{"asked twice", "mail in ('user00001@contoso.example','USER00001@contoso.example')", []string{"user00001@contoso.example"}, ""},
		{"empty value", "mail eq ''", []string{}, ""},
		{"15 values", "userPrincipalName in (" + values(15) + ")", []string{"user00001@contoso.example", "user00002@contoso.example", "user00003@contoso.example", "user00004@contoso.example", "user00005@contoso.example"}, ""},

		{"16 values", "userPrincipalName in (" + values(16) + ")", nil, tooMany},
		{"other property", "displayName eq 'Room A'", nil, "property 'displayName' of resource 'User'"},
		{"startswith", "startswith(userPrincipalName,'user')", nil, "Unsupported query"},
		{"or", "mail eq 'a@b' or mail eq 'c@d'", nil, "Unsupported query"},
		{"upper-case operator", "mail EQ 'a@b'", nil, "Unsupported query"},
		{"no space after eq", "mail eq'a@b'", nil, "Unsupported query"},
		{"no space before in", "mail in('a@b')", []string{}, ""},
		{"unterminated", "mail eq 'a@b", nil, "Unsupported query"},
		{"double-quoted", `mail eq "a@b"`, nil, "Unsupported query"},
		{"empty in", "mail in ()", nil, "Unsupported query"},
		{"trailing comma", "mail in ('a@b',)", nil, "Unsupported query"},
		{"no closing parenthesis", "mail in ('a@b'", nil, "Unsupported query"},
		{"garbage after", "mail eq 'a@b' x", nil, "Unsupported query"},
		{"empty", "", nil, "Unsupported query"},
	}
	for _, tt := range tests {
		r := do(t, s, http.MethodGet, filterQuery(tt.filter, "id,userPrincipalName,mail,displayName"), tok, nil)
		if tt.problem != "" {
			var e struct {
				Error struct{ Code, Message string }
			}
			r.json(t, &e)
			if r.Status != http.StatusBadRequest || e.Error.Code != "Request_UnsupportedQuery" || !strings.Contains(e.Error.Message, tt.problem) {
				t.Errorf("%s: %d %s, want 400 Request_UnsupportedQuery with %q", tt.name, r.Status, r.Body, tt.problem)
			}
			continue
		}
		var got usersReply
		r.json(t, &got)
		if r.Status != http.StatusOK || !slices.Equal(append([]string{}, got.upns()...), tt.want) {
			t.Errorf("%s: %d %v, want %v\n%s", tt.name, r.Status, got.upns(), tt.want, r.Body)
		}
	}
	if got := do(t, s, http.MethodGet, filterQuery("userPrincipalName in ("+values(16)+")", ""), tok, nil); !strings.Contains(string(got.Body), `"message":"`+tooMany+`"`) {
		t.Errorf("16 values: %s, want Microsoft's message %q exactly", got.Body, tooMany)
	}

	t.Run("select and reply shape", func(t *testing.T) {
		r := do(t, s, http.MethodGet, filterQuery("mail in ('ann@fabrikam.example','nobody@contoso.example')", "id,userPrincipalName,mail,displayName"), tok, nil)
		var got usersReply
		r.json(t, &got)
		want := map[string]any{"id": "", "userPrincipalName": guest, "mail": "ann@fabrikam.example", "displayName": "Ann (Fabrikam)"}
		for _, u := range s.Users() {
			if u.UPN == guest {
				want["id"] = u.ID
			}
		}
		if got.Context != "https://graph.microsoft.com/v1.0/$metadata#users(id,userPrincipalName,mail,displayName)" ||
			len(got.Value) != 1 || fmt.Sprint(got.Value[0]) != fmt.Sprint(want) {
			t.Errorf("%s\nwant context #users(id,userPrincipalName,mail,displayName) and %v", r.Body, want)
		}
		r = do(t, s, http.MethodGet, filterQuery("userPrincipalName eq 'room.a@contoso.example'", "ID,mail"), tok, nil)
		got = usersReply{}
		r.json(t, &got)
		if !strings.HasSuffix(got.Context, "#users(id,mail)") || len(got.Value) != 1 || len(got.Value[0]) != 2 ||
			got.Value[0]["mail"] != nil || !strings.Contains(string(r.Body), `"mail":null`) {
			t.Errorf("$select=ID,mail of a user without mail: %s, want id and \"mail\":null only", r.Body)
		}
		r = do(t, s, http.MethodGet, filterQuery("userPrincipalName eq 'user00001@contoso.example'", ""), tok, nil)
		got = usersReply{}
		r.json(t, &got)
		if !strings.HasSuffix(got.Context, "#users") || len(got.Value) != 1 || len(got.Value[0]) != 4 {
			t.Errorf("without $select: %s, want the four properties", r.Body)
		}
	})
	t.Run("without a filter", func(t *testing.T) {
		for _, path := range []string{"/v1.0/users", "/v1.0/users?$select=id"} {
			if r := do(t, s, http.MethodGet, path, tok, nil); r.Status != http.StatusBadRequest || r.graphErrorCode(t) != "Request_UnsupportedQuery" {
				t.Errorf("%s: %d %s, want 400 Request_UnsupportedQuery", path, r.Status, r.Body)
			}
		}
		r := do(t, s, http.MethodGet, "/v1.0/users?$filter=mail%20eq%20'a@b'&$filter=mail%20eq%20'c@d'", tok, nil)
		if r.Status != http.StatusBadRequest || r.graphErrorCode(t) != "BadRequest" {
			t.Errorf("$filter twice: %d %s, want 400 BadRequest", r.Status, r.Body)
		}
	})
	t.Run("token", func(t *testing.T) {
		if r := do(t, s, http.MethodGet, filterQuery("mail eq 'a@b'", ""), "", nil); r.Status != http.StatusUnauthorized {
			t.Errorf("no token: %d, want 401", r.Status)
		}
	})
}

// batchOf builds a $batch body of GET requests.
func batchOf(urls ...string) map[string]any {
	return batch(len(urls), func(i int) string { return urls[i] })
}

type batchItemReply struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    struct {
		Value []map[string]any `json:"value"`
		Error struct {
			Code, Message string
		} `json:"error"`
	} `json:"body"`
}

func batchItems(t *testing.T, r reply) []batchItemReply {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("$batch: %d %s", r.Status, r.Body)
	}
	var b struct{ Responses []batchItemReply }
	r.json(t, &b)
	return b.Responses
}

// itemURL is a $batch item's URL of a filtered users list, encoded as clients
// send it.
func itemURL(filter string) string {
	return strings.TrimPrefix(filterQuery(filter, "id,userPrincipalName,mail,displayName"), "/v1.0")
}

func TestBatchFilters(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 40, ExtraUsers: extraUsers})
	tok := appToken(t, s)
	in := func(from, n int) string {
		v := make([]string, n)
		for i := range v {
			v[i] = fmt.Sprintf("'user%05d@contoso.example'", from+i)
		}
		return "userPrincipalName in (" + strings.Join(v, ",") + ")"
	}
	items := batchItems(t, do(t, s, http.MethodPost, "/v1.0/$batch", tok, batchOf(
		itemURL(in(1, 15)),
		itemURL(in(16, 16)),
		itemURL("mail in ('ann@fabrikam.example','john.smith@contoso.example')"),
		"/users/"+url.PathEscape("ann_fabrikam.example#EXT#@contoso.example")+"?$select=id,userPrincipalName",
		"users?$filter=userPrincipalName+eq+'user00031@contoso.example'", // '+' as a space, as forms encode it
	)))
	if len(items) != 5 {
		t.Fatalf("%d answers, want 5", len(items))
	}
	if it := items[0]; it.ID != "1" || it.Status != 200 || len(it.Body.Value) != 15 {
		t.Errorf("15 values: %+v, want 200 with 15 users", it)
	}
	if it := items[1]; it.Status != 400 || it.Body.Error.Code != "Request_UnsupportedQuery" ||
		it.Body.Error.Message != "Too many child clauses specified in search filter expression containing 'OR' operators: 16. Max allowed: 15." {
		t.Errorf("16 values: %+v, want this item's 400 with Microsoft's message", it)
	}
	if it := items[2]; it.Status != 200 || len(it.Body.Value) != 2 || it.Body.Value[0]["userPrincipalName"] != "j.smith@contoso.example" ||
		it.Body.Value[1]["userPrincipalName"] != "ann_fabrikam.example#EXT#@contoso.example" {
		t.Errorf("by mail: %+v", it)
	}
	if it := items[3]; it.Status != 200 {
		t.Errorf("a guest by its #EXT# UPN (%%23): %+v", it)
	}
	if it := items[4]; it.Status != 200 || len(it.Body.Value) != 1 {
		t.Errorf("'+' for a space: %+v", it)
	}
	for i, it := range items {
		want := "1" // a read with $select
		if i == 4 {
			want = "2" // a list without
		}
		if it.Status == 200 && it.Headers["x-ms-resource-unit"] != want {
			t.Errorf("item %s: headers %v, want x-ms-resource-unit %s", it.ID, it.Headers, want)
		}
	}
	// The guest at top level, its '#' sent as %23.
	r := do(t, s, http.MethodGet, "/v1.0/users/ann_fabrikam.example%23EXT%23@contoso.example", tok, nil)
	var u graphsim.User
	r.json(t, &u)
	if r.Status != 200 || u.Mail != "ann@fabrikam.example" {
		t.Errorf("GET the guest by UPN: %d %s", r.Status, r.Body)
	}
}

// A $batch of more than 20 requests is refused whole, in Graph's error shape.
func TestBatchOf21(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 30})
	tok := appToken(t, s)
	r := do(t, s, http.MethodPost, "/v1.0/$batch", tok, batch(21, func(i int) string { return itemURL("mail eq 'a@b'") }))
	var e struct {
		Error struct {
			Code, Message string
			InnerError    map[string]string `json:"innerError"`
		} `json:"error"`
	}
	r.json(t, &e)
	if r.Status != http.StatusBadRequest || e.Error.Code != "BadRequest" || !strings.Contains(e.Error.Message, "limit of 20") ||
		e.Error.InnerError["request-id"] == "" || e.Error.InnerError["date"] == "" {
		t.Errorf("%d %s, want 400 BadRequest naming the limit of 20, with innerError", r.Status, r.Body)
	}
	if st := s.Stats(); st.MaxDirectoryRU[graphsim.DefaultDaemonApp] != 0 {
		t.Errorf("the refused batch charged %v resource units", st.MaxDirectoryRU)
	}
}

func TestDirectoryThrottleDefaults(t *testing.T) {
	for _, tt := range []struct{ users, extra, want int }{
		{10, 0, graphsim.DirectoryLimitSmall},
		{45, 4, graphsim.DirectoryLimitSmall},
		{45, 5, graphsim.DirectoryLimitMedium},
		{499, 0, graphsim.DirectoryLimitMedium},
		{500, 0, graphsim.DirectoryLimitLarge},
	} {
		var extra []graphsim.User
		for i := range tt.extra {
			extra = append(extra, graphsim.User{UPN: fmt.Sprintf("extra%d@contoso.example", i)})
		}
		s, err := graphsim.New(graphsim.Options{Users: tt.users, ExtraUsers: extra})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.DirectoryThrottle().Limit; got != tt.want {
			t.Errorf("%d+%d users: limit %d, want %d", tt.users, tt.extra, got, tt.want)
		}
	}
	s, _ := graphsim.New(graphsim.Options{Users: 10, DirectoryLimit: 42})
	if got := s.DirectoryThrottle().Limit; got != 42 {
		t.Errorf("DirectoryLimit 42: limit %d", got)
	}
}

func TestDirectoryThrottle(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 30, DirectoryLimit: 10, ThrottleLimit: 3})
	tok := appToken(t, s)
	users := s.Users()
	get := func(i int, sel string) reply {
		p := "/v1.0/users/" + users[i].UPN
		if sel != "" {
			p += "?$select=" + sel
		}
		return do(t, s, http.MethodGet, p, tok, nil)
	}
	list := func(sel string) reply {
		return do(t, s, http.MethodGet, filterQuery("mail eq 'user00001@contoso.example'", sel), tok, nil)
	}

	t.Run("top level", func(t *testing.T) {
		// 1 (GET) + 1 (GET, $select) + 2 (list) + 1 (list, $select) = 5 at t0,
		// then 5 lists with $select at t0+4s: 10, the limit.
		for i, r := range []reply{get(0, ""), get(1, "id"), list(""), list("id")} {
			if r.Status != 200 {
				t.Fatalf("read %d: %d %s", i, r.Status, r.Body)
			}
		}
		fc.Advance(4 * time.Second)
		for i := range 5 {
			if r := list("id"); r.Status != 200 || r.Header.Get("x-ms-resource-unit") != "1" {
				t.Fatalf("list %d: %d %v", i, r.Status, r.Header)
			}
		}
		r := get(2, "id")
		var e struct {
			Error struct{ Code, Message string }
		}
		r.json(t, &e)
		if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "6" || e.Error.Code != "TooManyRequests" ||
			!strings.Contains(e.Error.Message, "resource units") {
			t.Fatalf("over the limit: %d Retry-After %q %s, want 429, 6 s (until the t0 reads leave the window) and a Graph error",
				r.Status, r.Header.Get("Retry-After"), r.Body)
		}
		// Presence has its own throttle: still open.
		if r := do(t, s, http.MethodGet, "/v1.0/users/"+users[0].ID+"/presence", tok, nil); r.Status != 200 {
			t.Errorf("presence while the directory throttles: %d", r.Status)
		}
		fc.Advance(6 * time.Second) // t0+10s: the four t0 reads (5 units) left
		if r := list(""); r.Status != 200 {
			t.Fatalf("after Retry-After: %d", r.Status)
		}
	})

	t.Run("batch items", func(t *testing.T) {
		fc.Advance(time.Minute)
		urls := make([]string, 12)
		for i := range urls {
			urls[i] = "/users/" + users[i].UPN + "?$select=id"
		}
		urls[5] = "/users/" + users[0].ID + "/presence" // presence throttle, not the directory's
		urls[6] = "/users/nobody@contoso.example?$select=id"
		items := batchItems(t, do(t, s, http.MethodPost, "/v1.0/$batch", tok, batchOf(urls...)))
		var throttled []string
		for _, it := range items {
			switch it.Status {
			case 429:
				throttled = append(throttled, it.ID)
				if it.Headers["Retry-After"] != "10" || it.Body.Error.Code != "TooManyRequests" {
					t.Errorf("item %s: %+v, want Retry-After 10 and a Graph error body", it.ID, it)
				}
			case 200, 404:
			default:
				t.Errorf("item %s: %+v", it.ID, it)
			}
		}
		// 11 directory reads of 1 unit against a limit of 10: the last one is refused.
		if !slices.Equal(throttled, []string{"12"}) || items[5].Status != 200 || items[6].Status != 404 {
			t.Errorf("throttled items %v (presence %d, unknown user %d); want only item 12", throttled, items[5].Status, items[6].Status)
		}
	})

	t.Run("whole batch", func(t *testing.T) {
		fc.Advance(time.Minute)
		s.SetDirectoryThrottle(graphsim.DirectoryThrottle{Limit: 10, WholeBatch: true})
		in := func(n int) []string {
			urls := make([]string, n)
			for i := range urls {
				urls[i] = itemURL(fmt.Sprintf("userPrincipalName eq '%s'", users[i].UPN))
			}
			return urls
		}
		if items := batchItems(t, do(t, s, http.MethodPost, "/v1.0/$batch", tok, batchOf(in(6)...))); len(items) != 6 || items[5].Status != 200 {
			t.Fatalf("6 units of 10: %+v", items)
		}
		fc.Advance(3 * time.Second)
		r := do(t, s, http.MethodPost, "/v1.0/$batch", tok, batchOf(in(5)...))
		if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "7" || r.graphErrorCode(t) != "TooManyRequests" {
			t.Fatalf("5 more units as one batch: %d Retry-After %q %s, want 429 on the $batch, 7 s", r.Status, r.Header.Get("Retry-After"), r.Body)
		}
		// Nothing of the refused batch was charged: 4 units still fit.
		if items := batchItems(t, do(t, s, http.MethodPost, "/v1.0/$batch", tok, batchOf(in(4)...))); items[3].Status != 200 {
			t.Errorf("4 units after the refusal: %+v", items)
		}
		// A batch without directory reads is not the directory's business.
		if r := do(t, s, http.MethodPost, "/v1.0/$batch", tok, batchOf("/users/"+users[0].ID+"/presence")); r.Status != 200 {
			t.Errorf("presence-only batch: %d", r.Status)
		}
		s.SetDirectoryThrottle(graphsim.DirectoryThrottle{Limit: 10})
	})

	t.Run("control call", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/_sim/throttle/directory", "", map[string]any{"wholeBatch": true})
		if r.Status != http.StatusOK || s.DirectoryThrottle() != (graphsim.DirectoryThrottle{Limit: 10, WholeBatch: true}) {
			t.Errorf("wholeBatch only: %d %s; now %+v", r.Status, r.Body, s.DirectoryThrottle())
		}
		r = do(t, s, http.MethodPost, "/_sim/throttle/directory", "", map[string]any{"limit": 0, "wholeBatch": false})
		var got graphsim.DirectoryThrottle
		r.json(t, &got)
		if want := (graphsim.DirectoryThrottle{Limit: graphsim.DirectoryLimitSmall}); got != want || s.DirectoryThrottle() != want {
			t.Errorf("limit 0: %s, want %+v (the tenant size's default)", r.Body, want)
		}
		if r := do(t, s, http.MethodGet, "/_sim/throttle/directory", "", nil); !strings.Contains(string(r.Body), `"limit":3500`) {
			t.Errorf("GET: %s", r.Body)
		}
		if r := do(t, s, http.MethodPost, "/_sim/throttle/directory", "", "{"); r.Status != http.StatusBadRequest {
			t.Errorf("bad body: %d", r.Status)
		}
		s.SetDirectoryThrottle(graphsim.DirectoryThrottle{Limit: -1})
		fc.Advance(time.Minute)
		for i := range 20 {
			if r := list(""); r.Status != 200 {
				t.Fatalf("throttle off, list %d: %d", i, r.Status)
			}
		}
	})

	st := s.Stats()
	if st.DirectoryThrottled != 3 {
		t.Errorf("Stats.DirectoryThrottled = %d, want 3 (top level, a batch item, a whole batch)", st.DirectoryThrottled)
	}
	if st.Throttled != 2 {
		t.Errorf("Stats.Throttled = %d, want 2 (the requests answered 429)", st.Throttled)
	}
	if st.MaxDirectoryRU[graphsim.DefaultDaemonApp] != 40 || st.MaxInWindow[graphsim.DefaultDaemonApp] != 1 {
		t.Errorf("MaxDirectoryRU %v, MaxInWindow %v; want 40 (20 lists of 2 with the throttle off) and 1", st.MaxDirectoryRU, st.MaxInWindow)
	}
	var batches, lists int
	for _, rec := range st.Requests {
		switch {
		case rec.Path == "/v1.0/$batch" && rec.ItemsThrottled == 1:
			batches++
			if rec.Throttle != "presence,directory" || rec.RU != 10 || rec.IDs != 12 {
				t.Errorf("the batch with a throttled item: %+v, want throttle presence,directory, 10 RU, 12 requests", rec)
			}
		case rec.Path == "/v1.0/users" && rec.Status == 200:
			lists++
			if rec.Throttle != "directory" || (rec.RU != 1 && rec.RU != 2) || rec.IDs != 1 {
				t.Errorf("a list: %+v, want throttle directory, 1 or 2 RU, 1 value", rec)
			}
		case rec.Path == "/v1.0/users" && rec.Status == 429:
			t.Errorf("a list refused: %+v", rec)
		}
	}
	if batches != 1 || lists < 20 {
		t.Errorf("records: %d batches with a throttled item, %d lists", batches, lists)
	}
}

// The presence throttle no longer counts directory reads, and counts each
// presence read of a $batch.
func TestPresenceThrottleIsPresenceOnly(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 5, ThrottleLimit: 2})
	tok := appToken(t, s)
	users := s.Users()
	for i := range 10 {
		if r := do(t, s, http.MethodGet, "/v1.0/users/"+users[i%5].UPN, tok, nil); r.Status != 200 {
			t.Fatalf("lookup %d: %d", i, r.Status)
		}
	}
	items := batchItems(t, do(t, s, http.MethodPost, "/v1.0/$batch", tok, batch(3, func(i int) string { return "/users/" + users[i].ID + "/presence" })))
	if items[0].Status != 200 || items[1].Status != 200 || items[2].Status != 429 || items[2].Headers["Retry-After"] == "" {
		t.Errorf("three presence reads in a $batch against a limit of 2: %+v", items)
	}
	r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(users[0].ID))
	if r.Status != 429 {
		t.Errorf("getPresencesByUserId after two presence reads: %d, want 429", r.Status)
	}
	if st := s.Stats(); st.DirectoryThrottled != 0 || st.Requests[len(st.Requests)-1].Throttle != "presence" {
		t.Errorf("stats %+v", st.Requests[len(st.Requests)-1])
	}
}

func TestExtraUsers(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 3, ExtraUsers: extraUsers})
	tok := appToken(t, s)
	all := s.Users()
	if len(all) != 3+len(extraUsers) {
		t.Fatalf("%d users, want %d", len(all), 3+len(extraUsers))
	}
	other, _ := startFake(t, graphsim.Options{Users: 1, ExtraUsers: extraUsers[:1]})
	for i, u := range all[3:] {
		x := extraUsers[i]
		if u.UPN != x.UPN || u.Mail != x.Mail || u.DisplayName != x.DisplayName || len(u.ID) != 36 {
			t.Errorf("extra user %d = %+v, want %+v with an id", i, u, x)
		}
		if i == 0 && u.ID != other.Users()[1].ID {
			t.Errorf("id of %s differs between tenants of the same id: %s, %s", u.UPN, u.ID, other.Users()[1].ID)
		}
	}
	guest := all[4]
	if _, err := s.SetPresence(guest.UPN, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	var p presenceReply
	r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(guest.ID, all[3].ID))
	r.json(t, &p)
	if len(p.Value) != 2 || p.Value[0].Activity != "InACall" {
		t.Errorf("presence of the extra users: %s", r.Body)
	}
	if r := do(t, s, http.MethodGet, "/v1.0/users/"+url.PathEscape(guest.UPN)+"/presence", tok, nil); r.Status != 200 {
		t.Errorf("presence by the guest's UPN: %d %s", r.Status, r.Body)
	}
	r = do(t, s, http.MethodGet, "/v1.0/users/room.a@contoso.example", tok, nil)
	if !strings.Contains(string(r.Body), `"mail":null`) {
		t.Errorf("a user without mail: %s, want \"mail\":null", r.Body)
	}

	for _, bad := range [][]graphsim.User{
		{{UPN: "user00001@contoso.example"}}, // a generated user's
		{{UPN: "A@contoso.example"}, {UPN: "a@Contoso.example"}},
		{{UPN: "no-at-sign"}},
		{{UPN: "@contoso.example"}},
		{{UPN: "a b@contoso.example"}},
	} {
		if _, err := graphsim.New(graphsim.Options{Users: 1, ExtraUsers: bad}); err == nil || !strings.Contains(err.Error(), "ExtraUsers") {
			t.Errorf("ExtraUsers %+v: %v, want an error naming ExtraUsers", bad, err)
		}
	}
	if _, err := graphsim.New(graphsim.Options{Users: 1, ExtraUsers: []graphsim.User{{UPN: "x@contoso.example", Mail: "user00001@contoso.example"}}}); err != nil {
		t.Errorf("a mail another user has too: %v; allowed (two users answer it)", err)
	}
}
