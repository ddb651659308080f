package graphsim

import (
	"fmt"
	"strings"
	"testing"
)

// The sequenceNumber rendered on the fast path (prefix and five digits) is
// the one rendered in full, and keeps sorting past a million changes.
func TestAppendSequenceField(t *testing.T) {
	d, err := newDirectory("t", []string{"contoso.example"}, 1, nil, newPairTable(nil))
	if err != nil {
		t.Fatal(err)
	}
	prev := ""
	for _, n := range []uint64{0, 1, 0xfffff, 0x100000, 0x100001, 1<<32 - 1} {
		word := n<<32 | 7
		got := string(d.appendSequenceField(nil, word))
		want := `","sequenceNumber":"` + d.sequence(word)
		if got != want {
			t.Errorf("%d changes: %s, want %s", n, got, want)
		}
		seq := strings.TrimPrefix(got, `","sequenceNumber":"`)
		if len(seq) != 16 || seq <= prev {
			t.Errorf("%d changes: %s after %s, want 16 digits sorting after", n, seq, prev)
		}
		prev = seq
	}
}

// The id index finds every user by its id, byte for byte, and nothing else.
func TestIDIndex(t *testing.T) {
	d, err := newDirectory("t", []string{"contoso.example"}, 5000, []User{{UPN: "x@contoso.example"}}, newPairTable(nil))
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range d.users {
		if got, ok := d.ids.find([]byte(u.ID)); !ok || got != int32(i) {
			t.Fatalf("user %d (%s): %d, %v", i, u.ID, got, ok)
		}
	}
	for _, id := range []string{strings.ToUpper(d.users[0].ID), d.users[0].ID[:35], d.users[0].ID + "0", "", userID("other", "x@contoso.example"),
		fmt.Sprintf("%036d", 0)} {
		if got, ok := d.ids.find([]byte(id)); ok {
			t.Errorf("%q found as user %d", id, got)
		}
	}
}
