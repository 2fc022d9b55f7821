package commands

import (
	"context"
	"strings"

	"github.com/urfave/cli/v3"
)

// The groups of 'vbackup --help', so that a newcomer finds the main job
// first. The help sorts them by name, hence names that sort in this order.
const (
	categoryBackups     = "Back up, restore, verify (backups kept in a folder as qcow2 chains)"
	categoryJobs        = "Backup jobs, in virsh's terms"
	categoryCheckpoints = "Checkpoints, in virsh's terms"
	categoryShell       = "Shell completion"
	categoryFiles       = "Files back without a restore (read a backup in place)"
)

func newRoot(env *Env) *cli.Command {
	var subs []*cli.Command
	subs = append(subs, in(categoryBackups,
		newBackupCommand(env, runBackup),
		newRestoreCommand(env, runRestore),
		newVerifyCommand(env, runVerify),
		newBackupsCommand(env, runBackups),
		newPruneCommand(env, runPrune))...)
	subs = append(subs, in(categoryFiles,
		newMountCommand(env, runMount),
		newUmountCommand(env, runUmount),
		newLsCommand(env, runLs),
		newCatCommand(env, runCat),
		newServeCommand(env, runServe))...)
	subs = append(subs, in(categoryJobs,
		newBackupBeginCommand(env, runBackupBegin),
		newBackupDumpXMLCommand(env, runBackupDumpXML),
		newBackupEndCommand(env, runBackupEnd),
		newBackupStatusCommand(env, runBackupStatus),
		newBackupFetchCommand(env, runBackupFetch))...)
	subs = append(subs, in(categoryCheckpoints,
		newCheckpointCreateCommand(env, runCheckpointCreate),
		newCheckpointCreateAsCommand(env, runCheckpointCreateAs),
		newCheckpointListCommand(env, runCheckpointList),
		newCheckpointDumpXMLCommand(env, runCheckpointDumpXML),
		newCheckpointInfoCommand(env, runCheckpointInfo),
		newCheckpointParentCommand(env, runCheckpointParent),
		newCheckpointDeleteCommand(env, runCheckpointDelete),
		newCheckpointEditCommand(env, runCheckpointEdit))...)
	return rootWith(env, subs...)
}

// in puts commands in a category of the help.
func in(category string, cmds ...*cli.Command) []*cli.Command {
	for _, c := range cmds {
		c.Category = category
	}
	return cmds
}

// rootWith builds the top command around subs; tests build it around one
// command whose run function only records its options.
func rootWith(env *Env, subs ...*cli.Command) *cli.Command {
	for _, s := range subs {
		s.OnUsageError = onUsageError
		s.DisableSliceFlagSeparator = true // --diskspec vda,checkpoint=no is one value
		if s.Description != "" {
			s.Description = strings.TrimRight(s.Description, "\n") + "\n\n" + exitCodesHelp
		} else {
			s.Description = exitCodesHelp
		}
	}
	root := &cli.Command{
		Name:    "vbackup",
		Usage:   "back up the disks of running libvirt/QEMU domains",
		Version: version(),
		Description: "vbackup speaks virsh's language (backup-begin, checkpoint-list, ...) and writes\n" +
			"the <domainbackup> and <domaincheckpoint> XML from flags.\n\n" + exitCodesHelp,
		Reader:    env.Stdin,
		Writer:    env.Stdout,
		ErrWriter: env.Stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "connect",
				Aliases: []string{"c"},
				Usage:   "libvirt connection `URI` (default: $LIBVIRT_DEFAULT_URI, then libvirt's default)",
			},
			&cli.BoolFlag{
				Name:  "debug",
				Usage: "log each libvirt call and its duration to stderr",
			},
		},
		Commands:                  append(subs, newCompleteCommand(env)),
		EnableShellCompletion:     true,
		DisableSliceFlagSeparator: true, // --diskspec vda,checkpoint=no is one value
		OnUsageError:              onUsageError,
		// Errors are printed once, by Main; the library must not exit.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},

		// vbackup's own scripts: they complete flag values, disk specs and paths.
		ConfigureShellCompletionCommand: completionScripts(env),

		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() > 0 {
				return usageErrorf(cmd, "unknown command %q; run 'vbackup --help' for the list", cmd.Args().First())
			}
			return cli.ShowRootCommandHelp(cmd)
		},
	}
	return root
}

// globals copies the global flags into env. Each command calls it first:
// the flags may stand after the command name, where only the subcommand's
// parse sees them.
func globals(env *Env, cmd *cli.Command) {
	env.uri = cmd.String("connect")
	env.debug = cmd.Bool("debug")
}
