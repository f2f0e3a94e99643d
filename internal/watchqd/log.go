package watchqd

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
)

// journalSocket is journald's native socket (sd_journal_sendv's). Like
// go-systemd's own journal.journalSocket it is a variable only so that a
// test can build a watchqd that logs to a socket of its own (-ldflags -X).
var journalSocket = "/run/systemd/journal/socket"

// underJournal says whether watchqd was started by systemd with its
// output going to the journal: stderr is the stream JOURNAL_STREAM names
// (systemd.exec(5)), or systemd started it (INVOCATION_ID) and the
// journal's native socket exists.
func underJournal() bool {
	if ok, err := journal.StderrIsJournalStream(); err == nil && ok {
		return true
	}
	if os.Getenv("INVOCATION_ID") == "" {
		return false
	}
	fi, err := os.Stat(journalSocket)
	return err == nil && fi.Mode().Type() == os.ModeSocket
}

// newLogHandler returns the handler for format ("auto", "text", "json",
// "journal"): journald's native protocol (fields and priorities) under
// the journal, slog text (or JSON) on stderr elsewhere.
func newLogHandler(format string, level slog.Leveler, stderr io.Writer) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	switch {
	case format == "journal" || format == "auto" && underJournal():
		return &journalHandler{level: level, send: journal.Send, fallback: slog.NewTextHandler(stderr, opts), ident: "watchqd"}
	case format == "json":
		return slog.NewJSONHandler(stderr, opts)
	}
	return slog.NewTextHandler(stderr, opts)
}

// journalHandler is a slog.Handler writing each record to journald as
// one entry: MESSAGE, PRIORITY (syslog's, from the level), and each
// attribute as a field named in upper case ("uid" → UID, group "a" attr
// "b" → A_B). A record the journal does not take goes to fallback.
type journalHandler struct {
	level    slog.Leveler
	send     func(msg string, p journal.Priority, vars map[string]string) error // journal.Send; tests replace it
	fallback slog.Handler
	ident    string // SYSLOG_IDENTIFIER

	attrs  []slog.Attr // from WithAttrs, already prefixed; immutable
	prefix string      // the WithGroup prefix, "A_B_"; immutable
}

// Enabled implements slog.Handler.
func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// priority maps a slog level to syslog's (sd-daemon(3)).
func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}

// fieldName turns an attribute key into a journal field name: upper case
// letters, digits and '_', not starting with '_' or a digit.
func fieldName(prefix, key string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(prefix + key) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_0123456789")
	if s == "" {
		return "ATTR"
	}
	return s
}

func addField(vars map[string]string, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += fieldName("", a.Key) + "_"
		}
		for _, g := range a.Value.Group() {
			addField(vars, p, g)
		}
		return
	}
	vars[fieldName(prefix, a.Key)] = a.Value.String()
}

// Handle implements slog.Handler.
func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": h.ident}
	for _, a := range h.attrs {
		addField(vars, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(vars, h.prefix, a)
		return true
	})
	if err := h.send(r.Message, priority(r.Level), vars); err != nil {
		return h.fallbackHandler().Handle(ctx, r)
	}
	return nil
}

// fallbackHandler is fallback with h's attributes and group.
func (h *journalHandler) fallbackHandler() slog.Handler {
	fb := h.fallback
	if len(h.attrs) > 0 {
		fb = fb.WithAttrs(h.attrs)
	}
	return fb
}

// WithAttrs implements slog.Handler.
func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if h.prefix != "" {
			// Record the group in the key, as addField would.
			a = slog.Attr{Key: strings.TrimSuffix(h.prefix, "_") + "_" + a.Key, Value: a.Value}
		}
		n.attrs = append(n.attrs, a)
	}
	return &n
}

// WithGroup implements slog.Handler.
func (h *journalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + fieldName("", name) + "_"
	return &n
}
