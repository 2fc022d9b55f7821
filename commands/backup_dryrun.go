package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/urfave/cli/v3"

	"vbackup/engine"
	"vbackup/virt"
)

// dryRunFlags refuses, beside --dry-run, the flags that only say how a
// backup that runs is made or shown: a dry run makes none, and shows
// nothing but its answer.
func dryRunFlags(cmd *cli.Command) error {
	for _, name := range []string{"push", "compress", "quiet"} {
		if cmd.IsSet(name) {
			return usageErrorf(cmd, "--dry-run cannot be used with --%s, which only matters when the backup runs; leave out one of them", name)
		}
	}
	return nil
}

// runBackupDryRun prints what 'vbackup backup' would do, per disk, and
// changes nothing: no lock, no job, no checkpoint, no folder.
func runBackupDryRun(ctx context.Context, env *Env, dom virt.Domain, opts backupOptions) error {
	socks, err := sockets(ctx, env)
	if err != nil {
		return err
	}
	out := newOutput(env, opts.JSON, false)
	host, _ := os.Hostname()
	req := engine.BackupRequest{Dir: opts.Dir, Level: opts.Level, Disks: opts.Disks, MaxChain: opts.MaxChain, Now: env.Now,
		Host: host, PID: os.Getpid(), Sockets: socks, DryRun: true}
	b, err := engine.PrepareBackup(ctx, dom, req, out.notes)
	if err != nil {
		return err
	}
	defer b.Close()
	plan, err := b.DryRun(ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		return json.NewEncoder(env.Stdout).Encode(struct {
			Type string `json:"type"`
			engine.DryRun
		}{"dry-run", plan})
	}
	w := env.Stdout
	fmt.Fprintf(w, "Dry run: backup %s of domain %s would be %s (%s); nothing was changed\n", plan.Backup, plan.Domain, plan.Level, plan.Reason)
	for _, d := range plan.Disks {
		line := fmt.Sprintf("  %-6s %s", d.Name, d.Level)
		if d.From != "" {
			line += " from " + d.From
		}
		if d.Reason != "" {
			line += ": " + d.Reason
		}
		fmt.Fprintln(w, line)
	}
	for _, name := range plan.Ended {
		fmt.Fprintf(w, "  %-6s its chain would end here (not backed up this time)\n", name)
	}
	for _, first := range plan.First {
		fmt.Fprintf(w, "  first, %s\n", first)
	}
	return nil
}
