package commands

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/urfave/cli/v3"

	"vbackup/checkpoint"
	"vbackup/virt"
	"vbackup/xmlgen"
)

type checkpointCreateAsOptions struct {
	Domain   string
	Spec     xmlgen.CheckpointSpec
	PrintXML bool
	Quiesce  bool
}

func newCheckpointCreateAsCommand(env *Env, run func(context.Context, *Env, checkpointCreateAsOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "checkpoint-create-as",
		Usage:     "create a checkpoint from flags (as virsh checkpoint-create-as)",
		ArgsUsage: "DOMAIN [NAME]",
		Description: "Without NAME the checkpoint is named after the current time in seconds, as\n" +
			"libvirt names it. Without --diskspec every writable qcow2 disk gets a bitmap;\n" +
			"disks that cannot carry one (raw, read-only, empty) are left out, and vbackup\n" +
			"says so. --diskspec DISK[,checkpoint=bitmap|no][,bitmap=NAME] names the disks\n" +
			"that take part; the others are left out. A raw disk asked for a bitmap is an\n" +
			"error naming the disk.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "description", Usage: "a description `TEXT` kept with the checkpoint"},
			&cli.StringSliceFlag{Name: "diskspec", Usage: "a disk's part: `DISK[,checkpoint=bitmap|no][,bitmap=NAME]` (repeatable)"},
			&cli.BoolFlag{Name: "print-xml", Usage: "print the XML that would be sent and create nothing"},
			&cli.BoolFlag{Name: "quiesce", Usage: "freeze the guest's filesystems through the guest agent"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN", "[NAME]")
			if err != nil {
				return err
			}
			opts := checkpointCreateAsOptions{
				Domain:   a[0],
				Spec:     xmlgen.CheckpointSpec{Name: a[1], Description: cmd.String("description")},
				PrintXML: cmd.Bool("print-xml"),
				Quiesce:  cmd.Bool("quiesce"),
			}
			if opts.Spec.Name != "" {
				if err := checkpoint.ValidateName(opts.Spec.Name); err != nil {
					return &UsageError{Cmd: cmd, Err: err}
				}
			}
			for _, s := range cmd.StringSlice("diskspec") {
				d, err := xmlgen.ParseDiskSpec(s)
				if err != nil {
					return &UsageError{Cmd: cmd, Err: err}
				}
				opts.Spec.Disks = append(opts.Spec.Disks, d)
			}
			return run(ctx, env, opts)
		},
	}
}

func runCheckpointCreateAs(ctx context.Context, env *Env, opts checkpointCreateAsOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	spec, err := alignCheckpoint(ctx, env, dom, opts.Spec)
	if err != nil {
		return err
	}
	doc, err := xmlgen.CheckpointXML(spec)
	if err != nil {
		return err
	}
	if opts.PrintXML {
		_, err := fmt.Fprintf(env.Stdout, "%s\n", doc)
		return err
	}
	name, err := dom.CreateCheckpoint(ctx, doc, virt.CreateFlags{Quiesce: opts.Quiesce})
	if err != nil && opts.Quiesce && unsupportedFlags(err) {
		return fmt.Errorf("domain %q: this libvirt cannot quiesce the guest for a checkpoint (%w); leave out --quiesce, or freeze the guest's filesystems yourself (virsh domfsfreeze)", dom.Name(), err)
	}
	if err != nil {
		return virt.CheckpointErr(ctx, dom, spec.Name, err)
	}
	_, err = fmt.Fprintf(env.Stdout, "Domain checkpoint %s created\n", name)
	return err
}

// alignCheckpoint names the checkpoint when spec does not, refuses a name
// the domain already has, and settles which disks take part, telling the
// user about each disk left out.
func alignCheckpoint(ctx context.Context, env *Env, dom virt.Domain, spec xmlgen.CheckpointSpec) (xmlgen.CheckpointSpec, error) {
	if spec.Name == "" {
		spec.Name = strconv.FormatInt(env.Now().Unix(), 10)
	}
	switch _, err := dom.Checkpoint(ctx, spec.Name); {
	case err == nil:
		return spec, fmt.Errorf("domain %q already has a checkpoint %q; choose another name, or delete it first with checkpoint-delete", dom.Name(), spec.Name)
	case !errors.Is(err, virt.ErrNoCheckpoint):
		return spec, virt.CheckpointErr(ctx, dom, "", err)
	}
	disks, err := dom.Disks(ctx)
	if err != nil {
		return spec, fmt.Errorf("domain %q: %w", dom.Name(), err)
	}
	spec, notes, err := xmlgen.AlignCheckpointDisks(spec, disks)
	if err != nil {
		return spec, fmt.Errorf("domain %q: %w", dom.Name(), err)
	}
	for _, n := range notes {
		fmt.Fprintf(env.Stderr, "note: %s\n", n)
	}
	return spec, nil
}
