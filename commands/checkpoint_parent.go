package commands

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v3"

	"vbackup/virt"
)

type checkpointParentOptions struct {
	Domain     string
	Checkpoint string
}

func newCheckpointParentCommand(env *Env, run func(context.Context, *Env, checkpointParentOptions) error) *cli.Command {
	return &cli.Command{
		Name:        "checkpoint-parent",
		Usage:       "print the name of a checkpoint's parent (as virsh checkpoint-parent)",
		ArgsUsage:   "DOMAIN CHECKPOINT",
		Description: "A checkpoint without a parent (a root) is an error, as in virsh.",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN", "CHECKPOINT")
			if err != nil {
				return err
			}
			return run(ctx, env, checkpointParentOptions{Domain: a[0], Checkpoint: a[1]})
		},
	}
}

func runCheckpointParent(ctx context.Context, env *Env, opts checkpointParentOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	cp, err := dom.Checkpoint(ctx, opts.Checkpoint)
	if err != nil {
		return virt.CheckpointErr(ctx, dom, opts.Checkpoint, err)
	}
	if cp.Parent == "" {
		return fmt.Errorf("checkpoint %q of domain %q has no parent: it is a root", cp.Name, dom.Name())
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", cp.Parent)
	return err
}
