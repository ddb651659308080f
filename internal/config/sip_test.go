package config

import (
	"os"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/pbx/sip"
)

// [SIP] Event: presence (the default), dialog or both, in any case; anything
// else is refused with what is allowed and, when close, a suggestion.
func TestSIPEvent(t *testing.T) {
	if c := mustLoad(t, minimal+"[SIP]\nServer = pbx.example.com\n"); c.SIP.Event != sip.EventPresence {
		t.Errorf("default Event %q, want presence", c.SIP.Event)
	}
	for v, want := range map[string]string{"presence": sip.EventPresence, "Dialog": sip.EventDialog, "BOTH": sip.EventBoth} {
		c := mustLoad(t, minimal+"[SIP]\nServer = pbx.example.com\nEvent = "+v+"\n")
		if c.SIP.Event != want {
			t.Errorf("Event = %s loads as %q, want %q", v, c.SIP.Event, want)
		}
		if red := c.Redacted(); !strings.Contains(red, "\n[SIP]\nServer = pbx.example.com:5060\nEvent = "+want+"\n") {
			t.Errorf("Redacted does not show Event = %s:\n%s", want, red)
		}
	}
	_, err := Load(writeINI(t, t.TempDir(), []byte(minimal+"[SIP]\nServer = pbx.example.com\nEvent = blf\n")))
	if err == nil || !strings.Contains(err.Error(), `Presence.ini:6: [SIP] Event = "blf": unknown event package; use presence (PIDF, for presence servers and attendant consoles), dialog (dialog-info, what the BLF keys of desk phones subscribe to) or both`) {
		t.Errorf("Event = blf: %v", err)
	}
}

// `config set SIP.Event=dialog` writes the key under Server; a value that is
// not an event package is refused and nothing is written.
func TestSetSIPEvent(t *testing.T) {
	content := minimal + "\n[SIP]\nServer = pbx.example.com\n"
	path := writeINI(t, t.TempDir(), []byte(content))
	err := Set(path, []Setting{{"SIP.Event", "dialogue"}})
	if err == nil || !strings.Contains(err.Error(), `not written: Presence.ini:7: [SIP] Event = "dialogue": unknown event package (did you mean dialog?)`) {
		t.Fatalf("Set of a bad Event = %v", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != content {
		t.Fatalf("a refused Set changed the file:\n%s", raw)
	}
	if err := Set(path, []Setting{{"sip.event", "dialog"}}); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != content+"Event = dialog\n" {
		t.Fatalf("got\n%s", raw)
	}
	if c, err := Load(path); err != nil || c.SIP.Event != sip.EventDialog {
		t.Fatalf("loaded Event %q, %v", c.SIP.Event, err)
	}
}
