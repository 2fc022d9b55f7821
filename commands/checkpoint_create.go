package commands

import (
	"context"
	"fmt"
	"os"

	"github.com/urfave/cli/v3"
	"libvirt.org/go/libvirtxml"

	"vbackup/checkpoint"
	"vbackup/virt"
	"vbackup/xmlgen"
)

type checkpointCreateOptions struct {
	Domain  string
	File    string // "" creates a checkpoint from defaults
	Flags   virt.CreateFlags
	xmlText string // the file's content, read by the flag layer
}

func newCheckpointCreateCommand(env *Env, run func(context.Context, *Env, checkpointCreateOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "checkpoint-create",
		Usage:     "create a checkpoint from an XML file (as virsh checkpoint-create)",
		ArgsUsage: "DOMAIN [XMLFILE]",
		Description: "Without XMLFILE the checkpoint is made as checkpoint-create-as makes it with\n" +
			"no options. --redefine restores the record of a checkpoint whose bitmaps the\n" +
			"disks still hold (e.g. after the domain was re-created), from the XML that\n" +
			"checkpoint-dumpxml printed; --redefine-validate also checks the bitmaps.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "redefine", Usage: "restore the metadata of an existing checkpoint"},
			&cli.BoolFlag{Name: "redefine-validate", Usage: "with --redefine, check that the disks hold the checkpoint's bitmaps"},
			&cli.BoolFlag{Name: "quiesce", Usage: "freeze the guest's filesystems through the guest agent"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN", "[XMLFILE]")
			if err != nil {
				return err
			}
			if err := requires(cmd, "redefine-validate", "redefine"); err != nil {
				return err
			}
			opts := checkpointCreateOptions{
				Domain: a[0],
				File:   a[1],
				Flags: virt.CreateFlags{
					Redefine:         cmd.Bool("redefine"),
					RedefineValidate: cmd.Bool("redefine-validate"),
					Quiesce:          cmd.Bool("quiesce"),
				},
			}
			if opts.Flags.Redefine && opts.File == "" {
				return usageErrorf(cmd, "--redefine needs XMLFILE: the XML of the checkpoint to restore (see checkpoint-dumpxml)")
			}
			if opts.File != "" {
				b, err := os.ReadFile(opts.File)
				if err != nil {
					return &UsageError{Cmd: cmd, Err: fmt.Errorf("cannot read XMLFILE: %w", err)}
				}
				opts.xmlText = string(b)
			}
			return run(ctx, env, opts)
		},
	}
}

func runCheckpointCreate(ctx context.Context, env *Env, opts checkpointCreateOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	var def libvirtxml.DomainCheckpoint
	if opts.File != "" {
		if err := def.Unmarshal(opts.xmlText); err != nil {
			return fmt.Errorf("%s is not a <domaincheckpoint> document: %w", opts.File, err)
		}
	}
	if def.Name != "" {
		if err := checkpoint.ValidateName(def.Name); err != nil {
			return fmt.Errorf("%s: %w", opts.File, err)
		}
	}
	doc := opts.xmlText
	switch {
	case opts.Flags.Redefine:
		if def.Name == "" {
			return fmt.Errorf("%s names no checkpoint: --redefine needs the <name> of the checkpoint to restore", opts.File)
		}
	case def.Disks == nil:
		// No disks named: settle them as checkpoint-create-as does, so that
		// a raw disk is left out and the user told, not refused by libvirt.
		spec := xmlgen.CheckpointSpec{Name: def.Name, Description: def.Description}
		if spec, err = alignCheckpoint(ctx, env, dom, spec); err != nil {
			return err
		}
		def.Name = spec.Name
		if len(spec.Disks) > 0 {
			def.Disks = xmlgen.Checkpoint(spec).Disks
		}
		if doc, err = def.Marshal(); err != nil {
			return err
		}
	default:
		spec := xmlgen.CheckpointSpec{Name: def.Name, Description: def.Description}
		for _, d := range def.Disks.Disks {
			spec.Disks = append(spec.Disks, xmlgen.DiskSpec{Name: d.Name, Checkpoint: d.Checkpoint, Bitmap: d.Bitmap})
		}
		// Only to check the disks; the user's document is sent as written.
		if _, err := alignCheckpoint(ctx, env, dom, spec); err != nil {
			return err
		}
	}
	name, err := dom.CreateCheckpoint(ctx, doc, opts.Flags)
	if err != nil && opts.Flags.Quiesce && unsupportedFlags(err) {
		return fmt.Errorf("domain %q: this libvirt cannot quiesce the guest for a checkpoint (%w); leave out --quiesce, or freeze the guest's filesystems yourself (virsh domfsfreeze)", dom.Name(), err)
	}
	if err != nil {
		return virt.CheckpointErr(ctx, dom, def.Name, err)
	}
	if opts.File == "" {
		_, err = fmt.Fprintf(env.Stdout, "Domain checkpoint %s created\n", name)
	} else {
		_, err = fmt.Fprintf(env.Stdout, "Domain checkpoint %s created from '%s'\n", name, opts.File)
	}
	return err
}
