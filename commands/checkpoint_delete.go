package commands

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v3"

	"vbackup/virt"
)

type checkpointDeleteOptions struct {
	Domain     string
	Checkpoint string
	Flags      virt.DeleteFlags
}

func newCheckpointDeleteCommand(env *Env, run func(context.Context, *Env, checkpointDeleteOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "checkpoint-delete",
		Usage:     "delete a checkpoint (as virsh checkpoint-delete)",
		ArgsUsage: "DOMAIN CHECKPOINT",
		Description: "libvirt merges a deleted checkpoint's bitmap into its parent's, so an\n" +
			"incremental backup from the parent still sees every change.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "children", Usage: "delete the checkpoint and all its descendants"},
			&cli.BoolFlag{Name: "children-only", Usage: "delete only the checkpoint's descendants"},
			&cli.BoolFlag{Name: "metadata", Usage: "delete only libvirt's record; leave the bitmaps in the disk images"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN", "CHECKPOINT")
			if err != nil {
				return err
			}
			if err := exclusive(cmd, "children", "children-only"); err != nil {
				return err
			}
			return run(ctx, env, checkpointDeleteOptions{
				Domain:     a[0],
				Checkpoint: a[1],
				Flags: virt.DeleteFlags{
					Children:     cmd.Bool("children"),
					ChildrenOnly: cmd.Bool("children-only"),
					MetadataOnly: cmd.Bool("metadata"),
				},
			})
		},
	}
}

func runCheckpointDelete(ctx context.Context, env *Env, opts checkpointDeleteOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	if err := dom.DeleteCheckpoint(ctx, opts.Checkpoint, opts.Flags); err != nil {
		return virt.CheckpointErr(ctx, dom, opts.Checkpoint, err)
	}
	what := opts.Checkpoint
	if opts.Flags.ChildrenOnly {
		what += " children"
	}
	_, err = fmt.Fprintf(env.Stdout, "Domain checkpoint %s deleted\n\n", what)
	return err
}
