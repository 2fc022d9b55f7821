package commands

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v3"

	"vbackup/job"
	"vbackup/progress"
	"vbackup/virt"
)

type backupStatusOptions struct {
	Domain    string
	Completed bool
	JSON      bool
	Watch     bool // follow the running job until it ends
	Quiet     bool // with Watch: only errors
}

func newBackupStatusCommand(env *Env, run func(context.Context, *Env, backupStatusOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "backup-status",
		Usage:     "show a domain's backup job, with a row per disk (virsh domjobinfo, for backups)",
		ArgsUsage: "DOMAIN",
		Description: "virsh's equivalent is domjobinfo; this one adds a row per disk and the job's checkpoint.\n" +
			"Without a job it says so and exits 0. --completed shows the last finished job\n" +
			"(libvirt keeps its statistics for other readers too). --json prints one object\n" +
			"(fields in the README).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "completed", Usage: "show the last finished job instead of the running one"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON object (with --watch: JSON lines)"},
			&cli.BoolFlag{Name: "watch", Usage: "follow the running job, whoever started it, until it ends, showing each disk's progress"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "with --watch, print only errors"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN")
			if err != nil {
				return err
			}
			if err := exclusive(cmd, "watch", "completed"); err != nil {
				return err
			}
			if err := requires(cmd, "quiet", "watch"); err != nil {
				return err
			}
			return run(ctx, env, backupStatusOptions{Domain: a[0], Completed: cmd.Bool("completed"), JSON: cmd.Bool("json"),
				Watch: cmd.Bool("watch"), Quiet: cmd.Bool("quiet")})
		},
	}
}

// jsonStatus is backup-status --json (fields in the README).
type jsonStatus struct {
	Domain      string        `json:"domain"`
	State       virt.JobState `json:"state"`
	Operation   string        `json:"operation"`
	Mode        string        `json:"mode,omitempty"`
	ElapsedMS   int64         `json:"elapsed_ms"`
	Data        *jsonBytes    `json:"data"`
	Scratch     *jsonBytes    `json:"scratch"`
	Success     *bool         `json:"success"`
	Error       string        `json:"error,omitempty"`
	Checkpoint  string        `json:"checkpoint,omitempty"`
	Incremental string        `json:"incremental,omitempty"`
	Disks       []jsonDisk    `json:"disks"`
}

type jsonBytes struct {
	Processed uint64 `json:"processed"`
	Total     uint64 `json:"total"`
}

type jsonDisk struct {
	Name      string `json:"name"`
	State     string `json:"state"` // running, done, exporting
	Processed uint64 `json:"processed"`
	Total     uint64 `json:"total"`
}

func runBackupStatus(ctx context.Context, env *Env, opts backupStatusOptions) error {
	conn, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	if opts.Watch {
		if _, ok, err := job.Current(ctx, dom); err != nil {
			return err
		} else if ok {
			ctx, intr := interruptible(ctx, env, interruptText{
				again: fmt.Sprintf("The job may still be running: 'vbackup backup-end %s' ends it.", dom.Name()),
			})
			defer intr.stop()
			out := newOutput(env, opts.JSON, opts.Quiet)
			noteRedials(conn, out.notes)
			socks, err := sockets(ctx, env)
			if err != nil {
				return err
			}
			return intr.wrap(job.Watch(ctx, dom, watchOptions(env, out, socks, 0)))
		}
	}
	st := jsonStatus{Domain: dom.Name(), Disks: []jsonDisk{}}
	var stats virt.Job
	if opts.Completed {
		if stats, err = dom.Job(ctx, true); err != nil {
			return fmt.Errorf("domain %q: %w", dom.Name(), err)
		}
	} else {
		j, ok, err := job.Current(ctx, dom)
		if err != nil {
			return err
		}
		if !ok {
			if err := job.Settle(ctx, dom, progress.NewNotifier(nil, env.Stderr)); err != nil {
				return err
			}
		}
		stats = j.Stats
		if ok {
			st.Mode, st.Checkpoint, st.Incremental = j.Mode(), j.Checkpoint(), j.Incremental
			for _, d := range j.Disks {
				st.Disks = append(st.Disks, diskStatus(ctx, dom, d.Name, j.Pull))
			}
		}
	}
	st.State, st.Operation, st.ElapsedMS = stats.State, stats.Operation, stats.Elapsed.Milliseconds()
	if stats.DataKnown {
		st.Data = &jsonBytes{Processed: stats.DataProcessed, Total: stats.DataTotal}
	}
	if stats.TempKnown {
		st.Scratch = &jsonBytes{Processed: stats.TempUsed, Total: stats.TempTotal}
	}
	if stats.SuccessKnown {
		ok := stats.Success
		st.Success = &ok
	}
	st.Error = stats.Error
	if opts.JSON {
		return writeJSON(env.Stdout, st)
	}
	return writeStatus(env.Stdout, st)
}

func diskStatus(ctx context.Context, dom virt.Domain, disk string, pull bool) jsonDisk {
	out := jsonDisk{Name: disk, State: string(progress.DiskDone)}
	if pull {
		out.State = string(progress.DiskExporting)
	}
	if bj, ok, err := dom.BlockJob(ctx, disk); err == nil && ok && bj.Backup && !pull {
		out.State, out.Processed, out.Total = string(progress.DiskRunning), bj.Cur, bj.End
	}
	return out
}

func writeStatus(w io.Writer, st jsonStatus) error {
	if st.State == virt.JobNone {
		_, err := fmt.Fprintf(w, "Domain %s has no backup job running.\n", st.Domain)
		return err
	}
	row := func(label, value string) { fmt.Fprintf(w, "%-18s%s\n", label+":", value) }
	row("Domain", st.Domain)
	what := st.Operation
	if what == "" {
		what = "job"
	}
	if st.Mode != "" {
		what += " (" + st.Mode + ")"
	}
	row("Job", what+", "+string(st.State))
	row("Time elapsed", fmt.Sprintf("%d ms", st.ElapsedMS))
	if st.Data != nil {
		row("Data processed", fmt.Sprintf("%s of %s (%s)", progress.Capacity(st.Data.Processed), progress.Capacity(st.Data.Total), progress.Percent(st.Data.Processed, st.Data.Total)))
	}
	if st.Scratch != nil {
		row("Scratch in use", fmt.Sprintf("%s of %s", progress.Capacity(st.Scratch.Processed), progress.Capacity(st.Scratch.Total)))
	}
	if st.Incremental != "" {
		row("Incremental from", st.Incremental)
	}
	if st.Checkpoint != "" {
		row("Checkpoint", st.Checkpoint+" (created with this job)")
	}
	if st.Success != nil {
		row("Success", map[bool]string{true: "yes", false: "no"}[*st.Success])
	}
	if st.Error != "" {
		row("Error", st.Error)
	}
	if len(st.Disks) > 0 {
		fmt.Fprintf(w, "\n%-8s %-10s %-14s %-14s %s\n", "Disk", "State", "Processed", "Total", "Progress")
		for _, d := range st.Disks {
			if d.State != string(progress.DiskRunning) {
				fmt.Fprintf(w, "%-8s %s\n", d.Name, d.State)
				continue
			}
			fmt.Fprintf(w, "%-8s %-10s %-14s %-14s %s\n", d.Name, d.State, progress.Capacity(d.Processed), progress.Capacity(d.Total), progress.Percent(d.Processed, d.Total))
		}
	}
	return nil
}
