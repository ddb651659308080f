package watch

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/presence"
)

// The fuzz targets cover what the PBX watch reads from a PBX: the bodies of
// Event: dialog and Event: presence NOTIFYs, and a subscription's sequence of
// them. They are seeded with the captured and vendor-style bodies in testdata/;
// `make test` runs the seeds, `make fuzz` explores from them.

// maxErrorLen bounds an error message: a garbled body gives one short log line.
const maxErrorLen = 512

// testdataSeeds adds every testdata/<dir>/*.xml file to f.
func testdataSeeds(f *testing.F, dir string) [][]byte {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.xml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata/%s: %v", dir, err)
	}
	var out [][]byte
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func checkErrorMessage(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if len(msg) > maxErrorLen || !utf8.ValidString(msg) || strings.ContainsFunc(msg, unicode.IsControl) {
		t.Fatalf("error of %d bytes, not UTF-8 or with control characters: %.200q", len(msg), msg)
	}
}

// lineOfDialogs is the line dialogs give (the tracker's rule, restated).
func lineOfDialogs(dialogs []DialogElement) presence.Line {
	line := presence.LineIdle
	for _, d := range dialogs {
		switch d.State {
		case DialogConfirmed:
			return presence.LineInCall
		case DialogTrying, DialogProceeding, DialogEarly:
			line = presence.LineRinging
		}
	}
	return line
}

// keptDialogs is what a tracker keeps of dialogs: not terminated, not presencebridge's.
func keptDialogs(dialogs []DialogElement) []DialogElement {
	var out []DialogElement
	for _, d := range dialogs {
		if !d.Own() && d.State != DialogTerminated {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b DialogElement) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// FuzzParseDialogInfo reads any bytes as an Event: dialog NOTIFY body. No panic;
// a body over MaxBodySize is refused; errors are short; what is read has at most
// MaxDialogs dialogs, each with an id (once) and one of the five states,
// lower-cased; written out again as dialog-info it reads back the same; as a
// subscription's first document, a full one is applied and gives the line its
// dialogs say, a partial one asks for full state.
func FuzzParseDialogInfo(f *testing.F) {
	for _, b := range testdataSeeds(f, "dialog") {
		f.Add(b)
	}
	for _, s := range []string{
		"",
		`<dialog-info version="0" state="partial"><dialog id="presencebridge-1"><state>confirmed</state></dialog></dialog-info>`,
		`<dialog-info version="18446744073709551615" state="full"><dialog id="a"><state>Early</state></dialog><dialog id="a"><state>terminated</state></dialog></dialog-info>`,
		`<dialog-info version="1" state="full"><dialog id="a"><state>con<!---->firmed</state><state>early</state></dialog></dialog-info>`,
		`<?xml version="1.0" encoding="ISO-8859-1"?><dialog-info version="1" state="full"><dialog id="` + "\xe9" + `"><state>trying</state></dialog></dialog-info>`,
		`<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">]><dialog-info version="1" state="full"><dialog id="&a;"><state>early</state></dialog></dialog-info>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		info, err := ParseDialogInfo(body)
		if err != nil {
			checkErrorMessage(t, err)
			return
		}
		if len(body) > MaxBodySize {
			t.Fatalf("a body of %d bytes was read", len(body))
		}
		if len(info.Dialogs) > MaxDialogs {
			t.Fatalf("%d dialogs read", len(info.Dialogs))
		}
		ids := map[string]bool{}
		for _, d := range info.Dialogs {
			if d.ID == "" || ids[d.ID] || !slices.Contains(dialogStates, d.State) ||
				d.Direction != strings.ToLower(strings.TrimSpace(d.Direction)) {
				t.Fatalf("dialog %+v read (ids before: %v)", d, ids)
			}
			ids[d.ID] = true
		}
		if again := renderDialogInfo(info); len(again) <= MaxBodySize {
			back, err := ParseDialogInfo(again)
			if err != nil || !reflect.DeepEqual(back, info) {
				t.Fatalf("%+v written out reads back as %+v, %v:\n%s", info, back, err, again)
			}
		}
		var tr DialogTracker
		ok, err := tr.Apply(info)
		if !info.Full {
			if ok || !errors.Is(err, ErrNeedFullState) || tr.Line() != presence.LineUnknown {
				t.Fatalf("partial state first: %v, %v, line %q", ok, err, tr.Line())
			}
			return
		}
		if !ok || err != nil {
			t.Fatalf("full state first: %v, %v", ok, err)
		}
		if got, want := tr.Dialogs(), keptDialogs(info.Dialogs); len(got) != len(want) || len(got) > 0 && !reflect.DeepEqual(got, want) {
			t.Fatalf("dialogs kept %+v, want %+v", got, want)
		}
		if tr.Line() != lineOfDialogs(keptDialogs(info.Dialogs)) || tr.Calls() != len(keptDialogs(info.Dialogs)) {
			t.Fatalf("line %q with %d calls for %+v", tr.Line(), tr.Calls(), info.Dialogs)
		}
	})
}

// FuzzDialogTracker feeds a subscription four NOTIFY bodies in turn. After each,
// whatever the bodies: the tracker keeps at most MaxDialogs dialogs, none
// terminated or presencebridge's; Calls counts them and Line is what they say;
// a document applied has a version greater than the last (and the next one for
// partial state), a full one leaves exactly its dialogs, a partial one its
// updates; a document not applied changes nothing; an empty body leaves the
// line idle.
func FuzzDialogTracker(f *testing.F) {
	d := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "dialog", name))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(d("asterisk22-idle.xml"), d("asterisk22-early.xml"), d("asterisk22-confirmed.xml"), d("asterisk22-idle.xml"))
	f.Add([]byte{}, d("kamailio56-trying.xml"), d("kamailio56-confirmed.xml"), d("kamailio56-terminated.xml"))
	f.Add(d("kamailio56-early.xml"), d("kamailio56-merged-own.xml"), d("kamailio56-early.xml"), []byte(" "))
	f.Add(d("cisco-sca-partial.xml"), d("cisco-sca-full.xml"), d("cisco-sca-partial.xml"), d("freeswitch-yealink-early.xml"))
	f.Add(d("cisco-sca-full.xml"),
		[]byte(`<dialog-info version="43" state="partial"><dialog id="x"><state>trying</state></dialog></dialog-info>`),
		[]byte(`<dialog-info version="42" state="partial"><dialog id="Y2FsbGhhbGYtMTcwMTk5OA--1"><state>terminated</state></dialog></dialog-info>`),
		[]byte(`<dialog-info version="44" state="partial"><dialog id="presencebridge-x"><state>confirmed</state></dialog></dialog-info>`))
	f.Fuzz(func(t *testing.T, b1, b2, b3, b4 []byte) {
		var tr DialogTracker
		for i, body := range [][]byte{b1, b2, b3, b4} {
			beforeLine, beforeDialogs := tr.Line(), tr.Dialogs()
			lastV, versioned := tr.Version()
			info, err := ParseDialogInfo(body)
			if errors.Is(err, ErrNoBody) {
				tr.Clear()
				if tr.Line() != presence.LineIdle || tr.Calls() != 0 {
					t.Fatalf("NOTIFY %d, empty: line %q, %d calls", i+1, tr.Line(), tr.Calls())
				}
			} else if err == nil {
				stale := versioned && info.Version <= lastV
				needFull := !stale && !info.Full && (!versioned || info.Version != lastV+1)
				ok, err := tr.Apply(info)
				v, _ := tr.Version()
				switch {
				case stale || needFull:
					if ok || (err == nil) == needFull || needFull && !errors.Is(err, ErrNeedFullState) {
						t.Fatalf("NOTIFY %d: version %d (full %v) after %d (%v): %v, %v", i+1, info.Version, info.Full, lastV, versioned, ok, err)
					}
				case !ok:
					// The only other refusal: a partial document leaving too many dialogs.
					if info.Full || err == nil || !strings.HasSuffix(err.Error(), "over the 256 limit") {
						t.Fatalf("NOTIFY %d: version %d (full %v) after %d (%v) not applied: %v", i+1, info.Version, info.Full, lastV, versioned, err)
					}
				default:
					if err != nil || v != info.Version {
						t.Fatalf("NOTIFY %d: version %d applied: now %d, %v", i+1, info.Version, v, err)
					}
					checkApplied(t, info, beforeDialogs, tr.Dialogs())
				}
				if !ok && (!reflect.DeepEqual(tr.Dialogs(), beforeDialogs) || tr.Line() != beforeLine || v != lastV) {
					t.Fatalf("NOTIFY %d not applied (%v) but the state changed", i+1, err)
				}
			}
			all := tr.Dialogs()
			if tr.Calls() != len(all) || len(all) > MaxDialogs {
				t.Fatalf("NOTIFY %d: %d calls, %d dialogs", i+1, tr.Calls(), len(all))
			}
			for _, d := range all {
				if d.Own() || d.State == DialogTerminated {
					t.Fatalf("NOTIFY %d: kept %+v", i+1, d)
				}
			}
			if line := tr.Line(); line != presence.LineUnknown && line != lineOfDialogs(all) {
				t.Fatalf("NOTIFY %d: line %q for %+v", i+1, line, all)
			}
		}
	})
}

// checkApplied: a full document leaves exactly its dialogs kept; a partial one
// leaves those before it, updated by its own.
func checkApplied(t *testing.T, info DialogInfo, before, after []DialogElement) {
	t.Helper()
	want := map[string]DialogElement{}
	if !info.Full {
		for _, d := range before {
			want[d.ID] = d
		}
	}
	for _, d := range info.Dialogs {
		if d.Own() {
			continue
		}
		if d.State == DialogTerminated {
			delete(want, d.ID)
		} else {
			want[d.ID] = d
		}
	}
	if len(want) != len(after) {
		t.Fatalf("%d dialogs kept, want %d: %+v", len(after), len(want), after)
	}
	for _, d := range after {
		if want[d.ID] != d {
			t.Fatalf("kept %+v, want %+v", d, want[d.ID])
		}
	}
}

// FuzzParsePIDF reads any bytes as an Event: presence NOTIFY body. No panic; a
// body over MaxBodySize is refused; errors are short; what is read counts at
// most MaxElements tuples and persons, has each activity once, lower-cased, a
// basic of "open", "closed" or none, at most 16 notes, trimmed; and the state
// follows from them: unknown with nothing kept, in a call exactly when on the
// phone without Asterisk's "Ringing", DND exactly for busy/dnd, away only when
// idle.
func FuzzParsePIDF(f *testing.F) {
	for _, b := range testdataSeeds(f, "pidf") {
		f.Add(b)
	}
	for _, m := range []presence.Mapped{
		{Basic: "open", Activity: "on-the-phone", Note: "In a call"},
		{Basic: "closed", Activity: "busy", Note: "Do not disturb"},
		{Basic: "open", Activity: "focusing", Note: "Focusing"},
	} {
		f.Add(sip.PIDF("sip:1002@pbx.example", m))
	}
	for _, s := range []string{
		"",
		`<presence><note>Ringing</note><tuple id="t"><status><basic>open</basic><activities><on-the-phone/></activities></status></tuple></presence>`,
		`<presence><tuple id="t"/><person id="p"><activities><away/><on-the-phone/></activities></person></presence>`,
		`<presence><tuple id="teams"/><person id="p1"><activities><busy/></activities></person><person id="p2"><activities><away/><dnd/></activities></person></presence>`,
		`<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf"><p:tuple id="x"><p:status><p:basic>OPEN</p:basic></p:status><p:note> a </p:note></p:tuple></p:presence>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParsePIDF(body)
		if err != nil {
			checkErrorMessage(t, err)
			return
		}
		if len(body) > MaxBodySize {
			t.Fatalf("a body of %d bytes was read", len(body))
		}
		if s.Tuples+s.Persons+s.Own > MaxElements || s.Tuples < 0 || s.Persons < 0 || s.Own < 0 {
			t.Fatalf("read %d tuples, %d persons, %d own", s.Tuples, s.Persons, s.Own)
		}
		if s.Basic != "" && s.Basic != "open" && s.Basic != "closed" || s.Basic != "" && s.Tuples == 0 {
			t.Fatalf("basic %q with %d tuples", s.Basic, s.Tuples)
		}
		if len(s.Notes) > maxNotes {
			t.Fatalf("%d notes", len(s.Notes))
		}
		for _, n := range s.Notes {
			if n == "" || n != strings.TrimSpace(n) {
				t.Fatalf("note %q", n)
			}
		}
		for i, a := range s.Activities {
			if a == "" || a != strings.ToLower(a) || slices.Contains(s.Activities[:i], a) {
				t.Fatalf("activities %q", s.Activities)
			}
		}
		st := s.State()
		if s.Tuples+s.Persons == 0 {
			if st.Known() || st.Says() {
				t.Fatalf("nothing kept, state %+v", st)
			}
			return
		}
		has := func(a ...string) bool {
			return slices.ContainsFunc(s.Activities, func(x string) bool { return slices.Contains(a, x) })
		}
		ringing := slices.ContainsFunc(s.Notes, func(n string) bool { return strings.EqualFold(n, "Ringing") })
		wantLine := presence.LineIdle
		if has("on-the-phone") {
			wantLine = presence.LineInCall
			if ringing {
				wantLine = presence.LineRinging
			}
		}
		if st.Line != wantLine || st.DND != has("busy", "dnd", "do-not-disturb") ||
			st.Away != (has("away", "vacation", "holiday") && wantLine == presence.LineIdle) || st.Calls != 0 {
			t.Fatalf("state %+v from %+v", st, s)
		}
	})
}
