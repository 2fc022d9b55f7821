package commands

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v3"

	"vbackup/engine"
)

type verifyOptions struct {
	From string
	At   string // a backup name, latest, or all
	JSON bool
}

func newVerifyCommand(env *Env, run func(context.Context, *Env, verifyOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "read every backup back and compare its content with its manifest",
		Description: "For each backup (or the one --at names) and each of its disks, reads the disk's\n" +
			"chain as a restore would, recomputes the content checksum and compares it with the\n" +
			"manifest; it also checks that each overlay's backing file is the one the manifest\n" +
			"names. A damaged backup is named, and so are the later backups built on it.\n" +
			"Exit status 1 when anything does not match.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the backup folder `DIR`", Required: true},
			&cli.StringFlag{Name: "at", Usage: "verify only the backup `CHECKPOINT` (or latest); all by default", Value: "all"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object per disk checked"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			if _, err := args(cmd); err != nil {
				return err
			}
			return run(ctx, env, verifyOptions{From: cmd.String("from"), At: cmd.String("at"), JSON: cmd.Bool("json")})
		},
	}
}

func runVerify(ctx context.Context, env *Env, opts verifyOptions) error {
	store, err := engine.OpenFolder(opts.From)
	if err != nil {
		return err
	}
	ctx, intr := interruptible(ctx, env, interruptText{ending: "stopping the verification"})
	defer intr.stop()
	enc := json.NewEncoder(env.Stdout)
	n, err := engine.Verify(ctx, store, opts.At, func(res engine.Checked) error {
		if opts.JSON {
			return enc.Encode(res)
		}
		detail := res.Checksum
		if res.Detail != "" {
			detail = res.Detail
		}
		_, err := fmt.Fprintf(env.Stdout, "%-26s %-6s %-8s %s\n", res.Backup, res.Disk, res.Status, detail)
		return err
	})
	if err != nil {
		return intr.wrap(err)
	}
	if !opts.JSON {
		fmt.Fprintf(env.Stderr, "All %d disk images of %d backups match their manifests.\n", n.Disks, n.Backups)
	}
	return nil
}
