package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v3"

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
		Description: "For a pull job this is the normal end, once the exports were read. A push\n" +
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
	b, ok, err := currentBackup(ctx, dom)
	if err != nil {
		return err
	}
	if !ok {
		if err := settle(ctx, env, dom); err != nil {
			return err
		}
		return noBackupJob(dom)
	}
	if err := dom.AbortJob(ctx); err != nil {
		return fmt.Errorf("domain %q: ending the backup job: %w", dom.Name(), err)
	}
	if err := waitJobEnd(ctx, dom, 60*time.Second); err != nil {
		return err
	}
	cp := ""
	if b.hasRec {
		cp = b.rec.Checkpoint
	}
	if b.pull() {
		removeSocketDir(env, dom.Name())
		fmt.Fprintf(env.Stdout, "Backup job of domain %s ended.\n", dom.Name())
		if opts.DiscardCheckpoint {
			if !b.hasRec {
				fmt.Fprintf(env.Stderr, "note: vbackup did not start this job, so it does not know which checkpoint came with it; nothing deleted (see 'vbackup checkpoint-list %s')\n", dom.Name())
			} else if err := discardCheckpoint(ctx, env, dom, cp); err != nil {
				return err
			}
		}
		return clearRecord(ctx, dom, b)
	}
	// A push asked to end may have just finished: then nothing is lost.
	if done, err := dom.Job(ctx, true); err == nil && done.State == virt.JobCompleted && done.Success {
		fmt.Fprintf(env.Stdout, "Backup job of domain %s had completed before it could be cancelled; nothing was lost.\n", dom.Name())
		return clearRecord(ctx, dom, b)
	}
	fmt.Fprintf(env.Stdout, "Push backup of domain %s cancelled before it completed; its targets are incomplete.\n", dom.Name())
	if !b.hasRec {
		fmt.Fprintf(env.Stderr, "note: vbackup did not start this job; if a checkpoint was created with it, delete it with 'vbackup checkpoint-delete %s NAME'\n", dom.Name())
	} else if err := discardCheckpoint(ctx, env, dom, cp); err != nil {
		return err
	}
	return clearRecord(ctx, dom, b)
}

func clearRecord(ctx context.Context, dom virt.Domain, b runningBackup) error {
	if !b.hasRec {
		return nil
	}
	return dom.ClearBackupRecord(ctx)
}
