package commands

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v3"

	"vbackup/job"
	"vbackup/xmlselect"
)

type backupDumpXMLOptions struct {
	Domain string
	XPath  string
	Wrap   bool
}

func newBackupDumpXMLCommand(env *Env, run func(context.Context, *Env, backupDumpXMLOptions) error) *cli.Command {
	return &cli.Command{
		Name:        "backup-dumpxml",
		Usage:       "print the running backup job's XML (as virsh backup-dumpxml)",
		ArgsUsage:   "DOMAIN",
		Description: "libvirt fills in what the job was started without: targets, scratch files,\nexport names and bitmaps.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "xpath", Usage: "print only what the XPath `EXPRESSION` selects"},
			&cli.BoolFlag{Name: "wrap", Usage: "with --xpath, wrap the selected nodes in a <nodes> element"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN")
			if err != nil {
				return err
			}
			if err := requires(cmd, "wrap", "xpath"); err != nil {
				return err
			}
			return run(ctx, env, backupDumpXMLOptions{Domain: a[0], XPath: cmd.String("xpath"), Wrap: cmd.Bool("wrap")})
		},
	}
}

func runBackupDumpXML(ctx context.Context, env *Env, opts backupDumpXMLOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	if _, ok, err := job.Current(ctx, dom); err != nil {
		return err
	} else if !ok {
		return job.NoneRunning(dom)
	}
	doc, err := dom.BackupXML(ctx)
	if err != nil {
		return fmt.Errorf("domain %q: %w", dom.Name(), err)
	}
	if opts.XPath != "" {
		if doc, err = xmlselect.Select(doc, opts.XPath, opts.Wrap); err != nil {
			return fmt.Errorf("--xpath: %w", err)
		}
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", doc)
	return err
}
