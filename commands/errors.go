package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v3"
)

// Exit codes, the same for every command (each command's help lists them).
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitInterrupted = 130 // the shell's code for a command killed by SIGINT
)

const exitCodesHelp = `EXIT STATUS:
   0  success
   1  the operation failed (libvirt refused it, a domain or checkpoint was not found, ...)
   2  usage error: wrong arguments or flags; nothing was changed
 130  interrupted (Ctrl-C or SIGTERM), after cleaning up: what the command had
      begun is undone (a prune's half-done removal is completed by the next
      prune or backup); a second Ctrl-C leaves at once, with status 1`

// UsageError is a mistake in the command line. Main prints it with the
// command's synopsis and exits 2.
type UsageError struct {
	Cmd *cli.Command
	Err error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(cmd *cli.Command, format string, args ...any) error {
	return &UsageError{Cmd: cmd, Err: fmt.Errorf(format, args...)}
}

// onUsageError turns the CLI library's parse errors (unknown flag, missing
// value, ...) into UsageErrors.
func onUsageError(_ context.Context, cmd *cli.Command, err error, _ bool) error {
	var ue *UsageError
	if errors.As(err, &ue) {
		return err
	}
	return &UsageError{Cmd: cmd, Err: err}
}

// synopsis is the one-line usage of a command, for error messages.
func synopsis(cmd *cli.Command) string {
	if cmd == nil {
		return "vbackup COMMAND [OPTIONS] [ARGS]"
	}
	parts := []string{"vbackup"}
	if cmd.Name != "" && cmd.Name != "vbackup" {
		parts = append(parts, cmd.Name)
	}
	if cmd.ArgsUsage != "" {
		parts = append(parts, cmd.ArgsUsage)
	}
	// Required options belong to the synopsis too: "--to DIR".
	for _, f := range cmd.Flags {
		if r, ok := f.(cli.RequiredFlag); ok && r.IsRequired() {
			name := f.Names()[0]
			value := "VALUE"
			if u, ok := f.(interface{ GetUsage() string }); ok {
				if i := strings.Index(u.GetUsage(), "`"); i >= 0 {
					if j := strings.Index(u.GetUsage()[i+1:], "`"); j > 0 {
						value = u.GetUsage()[i+1 : i+1+j]
					}
				}
			}
			parts = append(parts, "--"+name+" "+value)
		}
	}
	return strings.Join(parts, " ")
}

// args checks the number of positional arguments against the names the
// command declares ("DOMAIN", "[NAME]", ...) and returns them, with "" for
// optional ones that were left out.
func args(cmd *cli.Command, names ...string) ([]string, error) {
	got := cmd.Args().Slice()
	required := 0
	for _, n := range names {
		if !strings.HasPrefix(n, "[") {
			required++
		}
	}
	switch {
	case len(got) < required:
		missing := names[len(got)]
		return nil, usageErrorf(cmd, "missing %s argument", strings.Trim(missing, "[]"))
	case len(got) > len(names) && len(names) == 0:
		return nil, usageErrorf(cmd, "unexpected argument %q: %s takes only flags", got[0], cmd.Name)
	case len(got) > len(names):
		return nil, usageErrorf(cmd, "unexpected argument %q: %s takes %s", got[len(names)], cmd.Name, strings.Join(names, " "))
	}
	out := make([]string, len(names))
	copy(out, got)
	return out, nil
}

// exclusive refuses two or more of the named flags together.
func exclusive(cmd *cli.Command, names ...string) error {
	var set []string
	for _, n := range names {
		if cmd.IsSet(n) {
			set = append(set, "--"+n)
		}
	}
	if len(set) > 1 {
		return usageErrorf(cmd, "%s cannot be used together; pick one", strings.Join(set, " and "))
	}
	return nil
}

// requires refuses flag when none of the flags it depends on is set.
func requires(cmd *cli.Command, flag string, needs ...string) error {
	if !cmd.IsSet(flag) {
		return nil
	}
	for _, n := range needs {
		if cmd.IsSet(n) {
			return nil
		}
	}
	return usageErrorf(cmd, "--%s needs --%s", flag, strings.Join(needs, " or --"))
}
