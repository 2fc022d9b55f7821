package commands

import (
	"context"

	"github.com/urfave/cli/v3"

	"vbackup/job"
	"vbackup/progress"
	"vbackup/virt"
)

type backupEndOptions struct {
	Domain            string
	DiscardCheckpoint bool
}

func newBackupEndCommand(env *Env, run func(context.Context, *Env, backupEndOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "backup-end",
		Usage:     "end a domain's backup job (virsh domjobabort, for backups)",
		ArgsUsage: "DOMAIN",
		Description: "virsh's equivalent is domjobabort; this one also settles the job's checkpoint.\n" +
			"For a pull job this is the normal end, once the exports were read. A push\n" +
			"job still running is cancelled, and the checkpoint vbackup created with it is\n" +
			"deleted: it would claim data that was not saved, and the next incremental\n" +
			"from it would miss changes. For a pull whose reader did not finish, add\n" +
			"--discard-checkpoint for the same reason.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "discard-checkpoint", Usage: "delete the checkpoint created with the job (a pull whose reader failed)"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN")
			if err != nil {
				return err
			}
			return run(ctx, env, backupEndOptions{Domain: a[0], DiscardCheckpoint: cmd.Bool("discard-checkpoint")})
		},
	}
}

func runBackupEnd(ctx context.Context, env *Env, opts backupEndOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	notes := progress.NewNotifier(env.Stdout, env.Stderr)
	j, ok, err := job.Current(ctx, dom)
	if err != nil {
		return err
	}
	if !ok {
		if err := job.Settle(ctx, dom, notes); err != nil {
			return err
		}
		return job.NoneRunning(dom)
	}
	if err := job.End(ctx, dom); err != nil {
		return err
	}
	if j.Pull {
		if socks, err := sockets(ctx, env); err == nil {
			socks.Remove(dom.Name())
		}
		notes.Infof("Backup job of domain %s ended.", dom.Name())
		if opts.DiscardCheckpoint {
			if !j.HasRecord {
				notes.Notef("note: vbackup did not start this job, so it does not know which checkpoint came with it; nothing deleted (see 'vbackup checkpoint-list %s')", dom.Name())
			} else if err := job.Discard(ctx, dom, j.Checkpoint(), notes); err != nil {
				return err
			}
		}
		return clearRecord(ctx, dom, j)
	}
	// A push asked to end may have just finished: then nothing is lost.
	if done, err := dom.Job(ctx, true); err == nil && done.State == virt.JobCompleted && done.Success {
		notes.Infof("Backup job of domain %s had completed before it could be cancelled; nothing was lost.", dom.Name())
		return clearRecord(ctx, dom, j)
	}
	notes.Infof("Push backup of domain %s cancelled before it completed; its targets are incomplete.", dom.Name())
	if !j.HasRecord {
		notes.Notef("note: vbackup did not start this job; if a checkpoint was created with it, delete it with 'vbackup checkpoint-delete %s NAME'", dom.Name())
	} else if err := job.Discard(ctx, dom, j.Checkpoint(), notes); err != nil {
		return err
	}
	return clearRecord(ctx, dom, j)
}

func clearRecord(ctx context.Context, dom virt.Domain, j *job.Job) error {
	if !j.HasRecord {
		return nil
	}
	return dom.ClearBackupRecord(ctx)
}
