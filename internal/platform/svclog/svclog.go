// Package svclog sends the service's log to the system's log: the journal on
// Linux (Journal: through stderr, each line with its syslog priority) and the
// Windows Event Log (EventLog: an entry per line, its type following the
// level). Each record is rendered by slog's text or JSON handler first, so the
// lines read as they do on a console.
package svclog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Sink takes one rendered record, without its trailing newline.
type Sink func(level slog.Level, line string) error

// Options shape the rendered lines.
type Options struct {
	Level slog.Leveler
	JSON  bool
	// NoTime leaves the time out: the journal and the Event Log stamp each entry.
	NoTime bool
}

// New returns a logger whose records go to sink.
func New(sink Sink, o Options) *slog.Logger {
	st := &state{sink: sink}
	ho := &slog.HandlerOptions{Level: o.Level}
	if o.NoTime {
		ho.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	var inner slog.Handler
	if o.JSON {
		inner = slog.NewJSONHandler(&st.buf, ho)
	} else {
		inner = slog.NewTextHandler(&st.buf, ho)
	}
	return slog.New(&handler{st: st, inner: inner})
}

type state struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	sink Sink
}

type handler struct {
	st    *state
	inner slog.Handler
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	h.st.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	return h.st.sink(r.Level, strings.TrimSuffix(h.st.buf.String(), "\n"))
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{st: h.st, inner: h.inner.WithAttrs(as)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{st: h.st, inner: h.inner.WithGroup(name)}
}

// Journal writes each line to w (the service's stderr, which systemd connects to
// the journal) prefixed with its syslog priority, "<3>" for errors to "<7>" for
// debug, as sd-daemon(3) describes; `journalctl -p warning` then filters by it.
func Journal(w io.Writer) Sink {
	return func(l slog.Level, line string) error {
		// A record's text may hold newlines (a multi-line error); each journal
		// line carries the priority, or the rest would be logged as info.
		p := Priority(l)
		var b strings.Builder
		for _, part := range strings.Split(line, "\n") {
			fmt.Fprintf(&b, "<%d>%s\n", p, part)
		}
		_, err := io.WriteString(w, b.String())
		return err
	}
}

// Priority is the syslog priority of a slog level.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	default:
		return 7
	}
}

// AtLeast passes on to h only the records from level up: a chatty library's
// own logger (sipgo's transport) quietened to its errors.
func AtLeast(h slog.Handler, level slog.Level) slog.Handler { return minLevel{h, level} }

type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
