package progress

import (
	"fmt"
	"io"
	"sync"
)

// Notifier takes a command's lines that are not progress. The code below
// the command line never prints; it says what it does through one of
// these, and the command decides where each kind of line goes.
type Notifier interface {
	// Infof is a line of the command's own account: what it is about to
	// do and what it did. --quiet silences it; --json moves it to stderr.
	Infof(format string, args ...any)
	// Notef is a line about something found or done on the side (a
	// checkpoint deleted, an earlier run's leftovers removed), which the
	// user must see even when the account is silenced.
	Notef(format string, args ...any)
}

// NewNotifier writes each Infof line to info and each Notef line to note,
// adding the newline. A nil writer drops its lines.
func NewNotifier(info, note io.Writer) Notifier {
	if info == nil {
		info = io.Discard
	}
	if note == nil {
		note = io.Discard
	}
	return &lines{info: info, note: note}
}

type lines struct {
	mu         sync.Mutex // a signal handler's goroutine may write too
	info, note io.Writer
}

func (l *lines) Infof(format string, args ...any) { l.write(l.info, format, args) }
func (l *lines) Notef(format string, args ...any) { l.write(l.note, format, args) }

func (l *lines) write(w io.Writer, format string, args []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(w, format+"\n", args...)
}
