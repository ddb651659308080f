package svclog

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestJournalLinesCarryTheirPriority(t *testing.T) {
	var out bytes.Buffer
	log := New(Journal(&out), Options{Level: slog.LevelDebug, NoTime: true})
	log.Debug("Cycle done", "users", 3)
	log.Info("presencebridge started", "version", "1.0.0")
	log.With("account", "main").Warn("Client secret expires soon", "days", 9)
	log.Error("Target down", "err", errors.New("line one\nline two"))
	want := "<7>level=DEBUG msg=\"Cycle done\" users=3\n" +
		"<6>level=INFO msg=\"presencebridge started\" version=1.0.0\n" +
		"<4>level=WARN msg=\"Client secret expires soon\" account=main days=9\n" +
		"<3>level=ERROR msg=\"Target down\" err=\"line one\\nline two\"\n"
	if out.String() != want {
		t.Fatalf("journal got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestLevelAndJSON(t *testing.T) {
	var got []string
	sink := func(l slog.Level, line string) error {
		got = append(got, fmt.Sprintf("%s %s", l, line))
		return nil
	}
	log := New(sink, Options{Level: slog.LevelWarn, JSON: true, NoTime: true})
	log.Info("not shown")
	log.WithGroup("sip").Warn("PUBLISH refused", "upn", "anna@contoso.com", "status", 403)
	if len(got) != 1 || got[0] != `WARN {"level":"WARN","msg":"PUBLISH refused","sip":{"upn":"anna@contoso.com","status":403}}` {
		t.Fatalf("sink got %q", got)
	}
}

func TestMultiLineMessagesKeepThePriorityOnEachLine(t *testing.T) {
	var out bytes.Buffer
	if err := Journal(&out)(slog.LevelError, "first\nsecond"); err != nil {
		t.Fatal(err)
	}
	if out.String() != "<3>first\n<3>second\n" {
		t.Fatalf("got %q", out.String())
	}
}

func TestAtLeast(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(AtLeast(slog.NewTextHandler(&buf, nil), slog.LevelError)).With("component", "sipgo").WithGroup("g")
	log.Info("chatter")
	log.Warn("more chatter")
	log.Error("broken", "k", 1)
	if out := buf.String(); strings.Contains(out, "chatter") || !strings.Contains(out, `msg=broken component=sipgo g.k=1`) {
		t.Fatalf("got %q", out)
	}
}
