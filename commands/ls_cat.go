package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v3"

	"vbackup/engine"
)

type lsOptions struct {
	pointOptions
	Path string
	JSON bool
}

const readHelp = "The filesystem is mounted in a private folder for the command's run and unmounted\n" +
	"when it ends, Ctrl-C included; nothing is written into the backup folder. PATH is a\n" +
	"path in the guest's filesystem; symbolic links are followed inside it only."

func newLsCommand(env *Env, run func(context.Context, *Env, lsOptions) error) *cli.Command {
	return &cli.Command{
		Name:        "ls",
		Usage:       "list a folder of a backed-up filesystem",
		ArgsUsage:   "[PATH]",
		Description: "Lists PATH (/ by default) of one filesystem of a disk at a backup point, as\n'ls -l' does: mode, size, modification time, name.\n\n" + readHelp,
		Flags: append(pointFlags(true),
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object per entry"}),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "[PATH]")
			if err != nil {
				return err
			}
			p, err := readPoint(cmd)
			if err != nil {
				return err
			}
			if a[0] == "" {
				a[0] = "/"
			}
			return run(ctx, env, lsOptions{pointOptions: p, Path: a[0], JSON: cmd.Bool("json")})
		},
	}
}

func runLs(ctx context.Context, env *Env, opts lsOptions) error {
	ctx, intr := interruptible(ctx, env, interruptText{ending: "stopping; nothing stays mounted"})
	defer intr.stop()
	var entries []engine.Entry
	err := engine.Read(ctx, opts.request("", ""), func(root *os.Root, m engine.Mounted) error {
		var err error
		entries, err = engine.List(root, opts.Path)
		return err
	})
	if err != nil {
		return intr.wrap(err)
	}
	if opts.JSON {
		enc := json.NewEncoder(env.Stdout)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	width := 1
	for _, e := range entries {
		width = max(width, len(strconv.FormatInt(e.Size, 10)))
	}
	for _, e := range entries {
		name := e.Name
		if e.Target != "" {
			name += " -> " + e.Target
		}
		if _, err := fmt.Fprintf(env.Stdout, "%s %*d %s %s\n", e.Perm, width, e.Size, e.ModTime.Local().Format(time.DateTime), name); err != nil {
			return err
		}
	}
	return nil
}

type catOptions struct {
	pointOptions
	Path string
}

func newCatCommand(env *Env, run func(context.Context, *Env, catOptions) error) *cli.Command {
	return &cli.Command{
		Name:        "cat",
		Usage:       "write one file of a backed-up filesystem to standard output",
		ArgsUsage:   "PATH",
		Description: "Writes the file PATH of one filesystem of a disk at a backup point to standard\noutput, e.g. 'vbackup cat --from DIR /etc/fstab > fstab'.\n\n" + readHelp,
		Flags:       pointFlags(true),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "PATH")
			if err != nil {
				return err
			}
			p, err := readPoint(cmd)
			if err != nil {
				return err
			}
			return run(ctx, env, catOptions{pointOptions: p, Path: a[0]})
		},
	}
}

func runCat(ctx context.Context, env *Env, opts catOptions) error {
	ctx, intr := interruptible(ctx, env, interruptText{ending: "stopping; nothing stays mounted"})
	defer intr.stop()
	// 'vbackup cat ... | head' closes the pipe early: a write must then
	// fail with EPIPE, which ends the copy and unmounts, rather than the
	// process dying of SIGPIPE with the filesystem left mounted.
	signal.Ignore(syscall.SIGPIPE)
	err := engine.Read(ctx, opts.request("", ""), func(root *os.Root, m engine.Mounted) error {
		f, err := engine.Open(root, opts.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(env.Stdout, ctxReader{ctx, f})
		return err
	})
	if errors.Is(err, syscall.EPIPE) {
		return nil // the reader has what it wanted, as with cat(1) | head
	}
	return intr.wrap(err)
}

// ctxReader stops a copy when ctx ends: Ctrl-C during a large cat.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}
