package commands

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v3"

	"vbackup/virt"
	"vbackup/xmlselect"
)

type checkpointDumpXMLOptions struct {
	Domain     string
	Checkpoint string
	Flags      virt.XMLFlags
	XPath      string
	Wrap       bool
}

func newCheckpointDumpXMLCommand(env *Env, run func(context.Context, *Env, checkpointDumpXMLOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "checkpoint-dumpxml",
		Usage:     "print a checkpoint's XML (as virsh checkpoint-dumpxml)",
		ArgsUsage: "DOMAIN CHECKPOINT",
		Description: "--size adds to each disk the bytes changed since the checkpoint; libvirt can\n" +
			"tell only while the domain runs.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-domain", Usage: "leave out the copy of the domain XML"},
			&cli.BoolFlag{Name: "size", Usage: "add each disk's changed bytes since the checkpoint (running domain)"},
			&cli.BoolFlag{Name: "security-info", Usage: "include security-sensitive parts of the domain XML"},
			&cli.StringFlag{Name: "xpath", Usage: "print only what the XPath `EXPRESSION` selects"},
			&cli.BoolFlag{Name: "wrap", Usage: "with --xpath, wrap the selected nodes in a <nodes> element"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN", "CHECKPOINT")
			if err != nil {
				return err
			}
			if err := requires(cmd, "wrap", "xpath"); err != nil {
				return err
			}
			return run(ctx, env, checkpointDumpXMLOptions{
				Domain:     a[0],
				Checkpoint: a[1],
				Flags: virt.XMLFlags{
					NoDomain:     cmd.Bool("no-domain"),
					Size:         cmd.Bool("size"),
					SecurityInfo: cmd.Bool("security-info"),
				},
				XPath: cmd.String("xpath"),
				Wrap:  cmd.Bool("wrap"),
			})
		},
	}
}

func runCheckpointDumpXML(ctx context.Context, env *Env, opts checkpointDumpXMLOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	doc, err := dom.CheckpointXML(ctx, opts.Checkpoint, opts.Flags)
	if err != nil {
		return virt.CheckpointErr(ctx, dom, opts.Checkpoint, err)
	}
	if opts.XPath != "" {
		if doc, err = xmlselect.Select(doc, opts.XPath, opts.Wrap); err != nil {
			return fmt.Errorf("--xpath: %w", err)
		}
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", doc)
	return err
}
