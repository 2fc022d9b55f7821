package commands

import (
	"io"

	"vbackup/progress"
)

// output is where a command's lines go, the one policy for --json and
// --quiet: data (results, JSON objects) on stdout; progress as bars on a
// terminal, plain lines in a log, JSON lines on stdout with --json, or
// nothing with --quiet; the command's own account (what it does, what it
// did) on stdout, on stderr with --json (stdout then carries only JSON),
// nowhere with --quiet; notes about what was found or done on the side
// always on stderr.
type output struct {
	data    io.Writer
	info    io.Writer
	printer progress.Printer
	notes   progress.Notifier
	json    bool
	quiet   bool
}

func newOutput(env *Env, json, quiet bool) output {
	o := output{data: env.Stdout, info: env.Stdout, json: json, quiet: quiet}
	switch {
	case quiet:
		o.info, o.printer = io.Discard, progress.NewQuiet()
	case json:
		o.info, o.printer = env.Stderr, progress.NewJSON(env.Stdout)
	case env.StderrTTY:
		o.printer = progress.NewTerminal(env.Stderr, env.Width())
	default:
		o.printer = progress.NewPlain(env.Stderr, progress.DefaultPlainEvery)
	}
	o.notes = progress.NewNotifier(o.info, env.Stderr)
	return o
}
