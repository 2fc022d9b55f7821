package commands

import (
	"context"
	"fmt"
	"slices"

	"github.com/urfave/cli/v3"

	"vbackup/checkpoint"
	"vbackup/virt"
)

type checkpointInfoOptions struct {
	Domain     string
	Checkpoint string
	JSON       bool
}

func newCheckpointInfoCommand(env *Env, run func(context.Context, *Env, checkpointInfoOptions) error) *cli.Command {
	return &cli.Command{
		Name:        "checkpoint-info",
		Usage:       "show a checkpoint's parent and children (as virsh checkpoint-info)",
		ArgsUsage:   "DOMAIN CHECKPOINT",
		Description: "--json prints one object with the fields of checkpoint-list --json.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print a JSON object"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN", "CHECKPOINT")
			if err != nil {
				return err
			}
			return run(ctx, env, checkpointInfoOptions{Domain: a[0], Checkpoint: a[1], JSON: cmd.Bool("json")})
		},
	}
}

func runCheckpointInfo(ctx context.Context, env *Env, opts checkpointInfoOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	// One listing gives the checkpoint, its children and descendants.
	all, err := dom.Checkpoints(ctx)
	if err != nil {
		return virt.CheckpointErr(ctx, dom, "", err)
	}
	idx := slices.IndexFunc(all, func(c virt.Checkpoint) bool { return c.Name == opts.Checkpoint })
	if idx < 0 {
		return virt.NoCheckpointIn(dom, opts.Checkpoint, all)
	}
	cp := all[idx]
	nodes := make([]checkpoint.Node, len(all))
	for i, c := range all {
		nodes[i] = checkpoint.Node{Name: c.Name, Parent: c.Parent, Created: c.Created}
	}
	info := toJSONCheckpoint(cp, dom.Name(), nodes)
	if opts.JSON {
		return writeJSON(env.Stdout, info)
	}
	parent := "-"
	if info.Parent != nil {
		parent = *info.Parent
	}
	// virsh's layout: labels padded to 16 columns, then a blank line.
	_, err = fmt.Fprintf(env.Stdout, "%-16s%s\n%-16s%s\n%-16s%s\n%-16s%d\n%-16s%d\n\n",
		"Name:", info.Name, "Domain:", info.Domain, "Parent:", parent,
		"Children:", info.Children, "Descendants:", info.Descendants)
	return err
}
