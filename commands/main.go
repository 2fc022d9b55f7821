// Package commands is vbackup's command line: one file per command, each
// with an options struct, a constructor that declares its flags and copies
// them into the options, and a run function that does the work through Env.
package commands

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/urfave/cli/v3"
)

// Version is set at link time (-ldflags "-X vbackup/commands.Version=...");
// otherwise it comes from the build's VCS stamp.
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return "dev-" + rev
		}
	}
	return "dev"
}

// Main runs the command line args (args[0] is the program) and returns the
// process's exit code. It is the one place where errors become exit codes.
func Main(ctx context.Context, args []string, env *Env) int {
	root := newRoot(env)
	err := root.Run(ctx, args)
	env.close()
	return report(env, err)
}

func report(env *Env, err error) int {
	if err == nil {
		return ExitOK
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(env.Stderr, "error: %v\n", ue.Err)
		fmt.Fprintf(env.Stderr, "usage: %s\n", synopsis(ue.Cmd))
		name := "vbackup --help"
		if ue.Cmd != nil && ue.Cmd.Name != "" && ue.Cmd.Name != "vbackup" {
			name = "vbackup " + ue.Cmd.Name + " --help"
		}
		fmt.Fprintf(env.Stderr, "Run '%s' for its options.\n", name)
		return ExitUsage
	}
	if errors.Is(err, ErrInterrupted) {
		fmt.Fprintf(env.Stderr, "error: %v\n", err)
		return ExitInterrupted
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintf(env.Stderr, "error: %s\n", msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintf(env.Stderr, "error: %v\n", err)
	return ExitFailure
}
