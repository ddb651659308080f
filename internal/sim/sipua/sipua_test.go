package sipua

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func phone(t *testing.T, o Options) *Phone {
	t.Helper()
	if o.Domain == "" {
		o.Domain = "pbx.example"
	}
	p, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// A phone can call another one directly (its Server being the callee): the
// callee answers by itself, both see the call, and a BYE from either side ends
// it on both.
func TestCallPhoneToPhone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bob := phone(t, Options{Server: "127.0.0.1:9", User: "bob"})
	alice := phone(t, Options{Server: bob.Addr(), User: "alice"})
	for _, hangupBy := range []string{"caller", "callee"} {
		t.Run("hang-up by "+hangupBy, func(t *testing.T) {
			out, err := alice.Call(ctx, "sip:bob@pbx.example")
			if err != nil {
				t.Fatal(err)
			}
			var in *Call
			select {
			case in = <-bob.Incoming():
			case <-ctx.Done():
				t.Fatal("bob did not report the answered call")
			}
			if in.CallID() != out.CallID() || !in.Incoming() || out.Incoming() {
				t.Errorf("call ids %q/%q, incoming %v/%v", out.CallID(), in.CallID(), out.Incoming(), in.Incoming())
			}
			if in.Remote() != "sip:alice@pbx.example" || out.Remote() != "sip:bob@pbx.example" {
				t.Errorf("remotes %q (bob's view), %q (alice's view)", in.Remote(), out.Remote())
			}
			if alice.Calls() != 1 || bob.Calls() != 1 {
				t.Errorf("calls in progress: alice %d, bob %d; want 1 each", alice.Calls(), bob.Calls())
			}
			hanger, other := out, in
			if hangupBy == "callee" {
				hanger, other = in, out
			}
			if err := hanger.Hangup(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-other.Done():
			case <-ctx.Done():
				t.Fatal("the other side did not see the BYE")
			}
			if alice.Calls() != 0 || bob.Calls() != 0 {
				t.Errorf("calls in progress after hang-up: alice %d, bob %d", alice.Calls(), bob.Calls())
			}
			if err := hanger.Hangup(ctx); err != nil {
				t.Errorf("second Hangup: %v", err)
			}
		})
	}
}

// With AnswerAfter the callee rings first; a caller that gives up while it
// rings cancels the INVITE, and the callee forgets the call.
func TestCancelWhileRinging(t *testing.T) {
	bob := phone(t, Options{Server: "127.0.0.1:9", User: "bob", AnswerAfter: 5 * time.Second})
	alice := phone(t, Options{Server: bob.Addr(), User: "alice"})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := alice.Call(ctx, "sip:bob@pbx.example")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call while bob rings 5 s with a 0.5 s deadline: err = %v, want the deadline", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Call returned after %s: it waited for the answer", took)
	}
	deadline := time.Now().Add(3 * time.Second)
	for bob.Calls() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := bob.Calls(); n != 0 {
		t.Errorf("bob still has %d calls after the CANCEL", n)
	}
}

// Calls to nobody fail with the status; bad options are refused with the field.
func TestRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bob := phone(t, Options{Server: "127.0.0.1:9", User: "bob"})
	alice := phone(t, Options{Server: bob.Addr(), User: "alice"})
	if _, err := alice.Call(ctx, "bob"); err == nil || !strings.Contains(err.Error(), "not a SIP URI") {
		t.Errorf("Call(\"bob\") err = %v", err)
	}
	bob.Close()
	if _, err := bob.Call(ctx, "sip:alice@pbx.example"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Call on a closed phone: err = %v", err)
	}
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{User: "a", Domain: "d"}, "Server is required"},
		{Options{Server: "127.0.0.1", User: "a", Domain: "d"}, "host:port"},
		{Options{Server: "127.0.0.1:5060", User: "a@b", Domain: "d"}, "SIP address"},
		{Options{Server: "127.0.0.1:5060", User: "a", Domain: "d", AnswerAfter: -time.Second}, "negative"},
	} {
		if _, err := New(ctx, c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) err = %v, want %q", c.o, err, c.want)
		}
	}
}
