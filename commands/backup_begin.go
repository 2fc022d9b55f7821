package commands

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v3"

	"vbackup/checkpoint"
	"vbackup/job"
	"vbackup/progress"
	"vbackup/virt"
	"vbackup/xmlgen"
)

type backupBeginOptions struct {
	Domain                string
	Spec                  xmlgen.BackupSpec // from the flags; aligned when the job starts
	Server                job.ServerRequest
	CheckpointDescription string
	BackupXMLFile         string // --backupxml: sent as written
	CheckpointXMLFile     string // --checkpointxml: sent as written
	ReuseExternal         bool
	PrintXML              bool
	Wait                  bool          // stay and show progress until the job ends
	Timeout               time.Duration // with Wait: end the job after this long
	JSON                  bool          // with Wait: progress as JSON lines on stdout
	Quiet                 bool          // only errors
	FetchDir              string        // pull: read the exports into DIR, then end the job
	Backing               string        // with FetchDir: the previous backup's folder
	TLSCerts              string        // with FetchDir: client certificates of a TLS export
	BWLimit               int64         // with FetchDir: bytes per second read; 0: no cap
	Quiesce               job.Quiesce

	backupXML, checkpointXML string // the files' contents
}

var backupXMLFlags = []string{"push", "pull", "incremental", "disk", "target-dir", "format", "scratch-dir", "server", "tls", "insecure"}

func newBackupBeginCommand(env *Env, run func(context.Context, *Env, backupBeginOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "backup-begin",
		Usage:     "start a push or pull backup job from flags (as virsh backup-begin)",
		ArgsUsage: "DOMAIN",
		Description: "Push (the default): libvirt writes each disk to a target file. Pull: libvirt\n" +
			"serves each disk over NBD until 'vbackup backup-end'; by default on a unix socket\n" +
			"in a private folder (/run/vbackup/DOMAIN as root). --checkpoint NAME creates a\n" +
			"checkpoint with the job, over exactly the disks the job backs up; a job that\n" +
			"does not complete has it deleted (backup-end, or the next vbackup backup command).\n\n" +
			"--disk SPEC (repeatable; when given, only the listed disks take part):\n" +
			"   vda | vdb,skip | vda,target=/abs/file[,format=qcow2|raw] | vda,type=block,target=/dev/X\n" +
			"   vda,scratch=/abs/file (pull) | vda,incremental=CP | vda,full | vda,export=NAME,bitmap=NAME (pull)\n" +
			"Targets are named DIR/DOMAIN.DISK.<checkpoint or UTC time>.<format> with --target-dir;\n" +
			"without it, beside each disk image. An existing target is never overwritten.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "push", Usage: "libvirt writes the backup to target files (the default)"},
			&cli.BoolFlag{Name: "pull", Usage: "libvirt serves the disks over NBD for a reader"},
			&cli.StringFlag{Name: "incremental", Usage: "copy only what changed since `CHECKPOINT`"},
			&cli.StringFlag{Name: "checkpoint", Usage: "create checkpoint `NAME` with the job"},
			&cli.StringFlag{Name: "checkpoint-description", Usage: "description `TEXT` of the --checkpoint"},
			&cli.StringSliceFlag{Name: "disk", Usage: "a disk's part, `SPEC` (see above; repeatable)"},
			&cli.StringFlag{Name: "target-dir", Usage: "push: write the targets into `DIR`"},
			&cli.StringFlag{Name: "format", Usage: "push: target `FORMAT`, qcow2 or raw", Value: "qcow2"},
			&cli.StringFlag{Name: "scratch-dir", Usage: "pull: put the scratch files into `DIR`"},
			&cli.StringFlag{Name: "server", Usage: "pull: NBD server `ADDRESS`, unix:/abs/socket or tcp:HOST[:PORT]"},
			&cli.BoolFlag{Name: "tls", Usage: "pull: NBD over TLS (libvirt's backup TLS certificates)"},
			&cli.BoolFlag{Name: "insecure", Usage: "pull: allow an unencrypted TCP export on an address other than loopback"},
			&cli.StringFlag{Name: "quiesce", Usage: "freeze the guest's filesystems while the job starts, through its guest agent: `WHEN` auto (if the agent answers), yes (or fail) or no", Value: string(job.QuiesceAuto)},
			&cli.BoolFlag{Name: "reuse-external", Usage: "the target (push) or scratch (pull) files exist already: use them"},
			&cli.StringFlag{Name: "backupxml", Usage: "send the <domainbackup> of `FILE` instead of building it from flags"},
			&cli.StringFlag{Name: "checkpointxml", Usage: "send the <domaincheckpoint> of `FILE` with the job"},
			&cli.BoolFlag{Name: "print-xml", Usage: "print the document(s) that would be sent and start nothing"},
			&cli.BoolFlag{Name: "wait", Usage: "stay until the job ends, showing each disk's progress; exit 0 only if it completed"},
			&cli.DurationFlag{Name: "timeout", Usage: "with --wait, end the job (and its checkpoint) after `DURATION`, e.g. 2h"},
			&cli.BoolFlag{Name: "json", Usage: "with --wait, print progress as JSON lines on stdout (see the README)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors; the exit status tells the outcome"},
			&cli.StringFlag{Name: "fetch", Usage: "pull: read the exports into `DIR` (as backup-fetch), then end the job; a failed fetch discards the checkpoint"},
			&cli.StringFlag{Name: "backing", Usage: "with --fetch of an incremental: back each file by the same disk's file in `DIR`"},
			&cli.StringFlag{Name: "tls-certs", Usage: "with --fetch of a --tls job: the client certificates in `DIR` (as backup-fetch)"},
			bwlimitFlag("read by --fetch"),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN")
			if err != nil {
				return err
			}
			if err := backupBeginFlagRules(cmd); err != nil {
				return err
			}
			opts := backupBeginOptions{
				Domain: a[0],
				Spec: xmlgen.BackupSpec{
					Pull:        cmd.Bool("pull"),
					Incremental: cmd.String("incremental"),
					TargetDir:   cmd.String("target-dir"),
					Format:      cmd.String("format"),
					ScratchDir:  cmd.String("scratch-dir"),
					Checkpoint:  cmd.String("checkpoint"),
				},
				CheckpointDescription: cmd.String("checkpoint-description"),
				BackupXMLFile:         cmd.String("backupxml"),
				CheckpointXMLFile:     cmd.String("checkpointxml"),
				ReuseExternal:         cmd.Bool("reuse-external"),
				PrintXML:              cmd.Bool("print-xml"),
				Wait:                  cmd.Bool("wait"),
				Timeout:               cmd.Duration("timeout"),
				JSON:                  cmd.Bool("json"),
				Quiet:                 cmd.Bool("quiet"),
				FetchDir:              cmd.String("fetch"),
				Backing:               cmd.String("backing"),
				TLSCerts:              cmd.String("tls-certs"),
			}
			if opts.BWLimit, err = bwlimitOption(cmd); err != nil {
				return err
			}
			for _, s := range cmd.StringSlice("disk") {
				d, err := xmlgen.ParseBackupDisk(s)
				if err != nil {
					return &UsageError{Cmd: cmd, Err: err}
				}
				opts.Spec.Disks = append(opts.Spec.Disks, d)
			}
			if opts.Quiesce, err = job.ParseQuiesce(cmd.String("quiesce")); err != nil {
				return &UsageError{Cmd: cmd, Err: err}
			}
			opts.Server.Spec.TLS = cmd.Bool("tls")
			if cmd.IsSet("server") {
				if opts.Server, err = job.ParseServer(cmd.String("server"), cmd.Bool("tls")); err != nil {
					return &UsageError{Cmd: cmd, Err: err}
				}
			}
			opts.Server.Insecure = cmd.Bool("insecure")
			if opts.Spec.Checkpoint != "" {
				if err := checkpoint.ValidateName(opts.Spec.Checkpoint); err != nil {
					return &UsageError{Cmd: cmd, Err: fmt.Errorf("--checkpoint: %w", err)}
				}
			}
			if opts.backupXML, err = readFlagFile(cmd, "backupxml"); err != nil {
				return err
			}
			if opts.checkpointXML, err = readFlagFile(cmd, "checkpointxml"); err != nil {
				return err
			}
			return run(ctx, env, opts)
		},
	}
}

// backupBeginFlagRules refuses flag combinations that cannot mean anything.
func backupBeginFlagRules(cmd *cli.Command) error {
	checks := []error{
		exclusive(cmd, "push", "pull"),
		requires(cmd, "timeout", "wait"),
		exclusive(cmd, "json", "quiet"),
		exclusive(cmd, "print-xml", "wait"),
		exclusive(cmd, "fetch", "wait"),
		requires(cmd, "fetch", "pull"),
		requires(cmd, "backing", "fetch"),
		requires(cmd, "tls-certs", "fetch"),
		requires(cmd, "bwlimit", "fetch"),
		requires(cmd, "json", "wait", "fetch"),
		requires(cmd, "checkpoint-description", "checkpoint"),
		requires(cmd, "insecure", "server"),
	}
	for _, name := range backupXMLFlags {
		checks = append(checks, exclusive(cmd, "backupxml", name))
	}
	checks = append(checks, exclusive(cmd, "checkpointxml", "checkpoint"), exclusive(cmd, "checkpointxml", "checkpoint-description"))
	if cmd.Bool("pull") {
		checks = append(checks, exclusive(cmd, "pull", "target-dir"))
		if !cmd.IsSet("fetch") {
			checks = append(checks, exclusive(cmd, "pull", "format"))
		}
	} else {
		for _, name := range []string{"scratch-dir", "server", "tls"} {
			if cmd.IsSet(name) {
				checks = append(checks, usageErrorf(cmd, "--%s is for pull backups: add --pull, or leave it out", name))
			}
		}
	}
	for _, name := range []string{"target-dir", "scratch-dir"} {
		if v := cmd.String(name); cmd.IsSet(name) && !filepath.IsAbs(v) {
			checks = append(checks, usageErrorf(cmd, "--%s %q: give an absolute path (libvirtd resolves paths, not this shell)", name, v))
		}
	}
	if f := cmd.String("format"); f != "qcow2" && f != "raw" {
		checks = append(checks, usageErrorf(cmd, "--format %q: use qcow2 or raw", f))
	}
	return firstErr(checks)
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func readFlagFile(cmd *cli.Command, name string) (string, error) {
	file := cmd.String(name)
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", &UsageError{Cmd: cmd, Err: fmt.Errorf("--%s: %w", name, err)}
	}
	return string(b), nil
}

func runBackupBegin(ctx context.Context, env *Env, opts backupBeginOptions) error {
	conn, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	if err := job.Running(ctx, dom); err != nil {
		return err
	}
	out := newOutput(env, opts.JSON, opts.Quiet)
	noteRedials(conn, out.notes)
	// --print-xml changes nothing and asks nothing of the job machinery, so
	// it also works where jobs cannot run (libvirt's test driver).
	if !opts.PrintXML {
		if err := job.Ready(ctx, dom, out.notes); err != nil {
			return err
		}
	}
	sockets, err := sockets(ctx, env)
	if err != nil {
		return err
	}
	if sockets.Remote() && opts.Server.Set && opts.Server.Spec.Socket != "" {
		return &UsageError{Err: fmt.Errorf("--server unix:%s names a path on this host, and libvirtd runs on %s: leave --server out "+
			"(vbackup makes the socket there and reads it through SSH), or use --server tcp:HOST:PORT --tls", opts.Server.Spec.Socket, sockets.Host.Name)}
	}
	plan, err := job.NewPlan(ctx, dom, job.PlanRequest{Spec: opts.Spec, Server: opts.Server, CheckpointDescription: opts.CheckpointDescription,
		BackupXML: opts.backupXML, BackupXMLFile: opts.BackupXMLFile, CheckpointXML: opts.checkpointXML, CheckpointXMLFile: opts.CheckpointXMLFile,
		ReuseExternal: opts.ReuseExternal, Local: job.LocalURI(conn.URI()), Sockets: sockets, Now: env.Now()},
		progress.NewNotifier(env.Stderr, env.Stderr))
	if err != nil || opts.PrintXML {
		sockets.Remove(dom.Name())
	}
	if err != nil {
		return err
	}
	if opts.PrintXML {
		fmt.Fprint(env.Stdout, plan.BackupXML)
		if plan.CheckpointXML != "" {
			fmt.Fprint(env.Stdout, plan.CheckpointXML)
		}
		return nil
	}
	if plan.Freeze, err = job.CheckQuiesce(ctx, dom, opts.Quiesce); err != nil {
		sockets.Remove(dom.Name())
		return err
	}
	if plan.Freeze.Note != "" {
		out.notes.Infof("%s", plan.Freeze.Note)
	}
	rec := virt.BackupRecord{Checkpoint: plan.Checkpoint, Pull: plan.Pull, Started: env.Now()}
	started, err := beginShielded(ctx, env, dom, plan, opts.ReuseExternal, rec, out)
	if err != nil {
		sockets.Remove(dom.Name())
		return err
	}
	if err := printStarted(ctx, out, dom, plan); err != nil {
		return err
	}
	if started != nil {
		out.notes.Infof("The job runs: 'vbackup backup-end %s' ends it and deletes the checkpoint it made.", dom.Name())
		return started
	}
	if opts.FetchDir == "" && !opts.Wait {
		return nil
	}
	ctx, intr := interruptible(ctx, env, interruptText{
		again: fmt.Sprintf("The job may still be running: 'vbackup backup-end %s' ends it and deletes the checkpoint it made.", dom.Name()),
	})
	defer intr.stop()
	if opts.FetchDir != "" {
		return intr.wrap(fetchAndEnd(ctx, env, out, dom, sockets, opts))
	}
	return intr.wrap(job.Watch(ctx, dom, watchOptions(env, out, sockets, opts.Timeout)))
}

// watchOptions are those of every command that watches a job.
func watchOptions(env *Env, out output, sockets job.Sockets, timeout time.Duration) job.WatchOptions {
	return job.WatchOptions{Printer: out.printer, Notes: out.notes, Timeout: timeout, Now: env.Now, Reconnect: env.Reconnect, Sockets: sockets}
}

// printStarted tells, from the job as libvirt filled it in, where each disk
// goes (push) or where to read it (pull).
func printStarted(ctx context.Context, out output, dom virt.Domain, plan job.Plan) error {
	j, ok, err := job.Started(ctx, dom)
	switch {
	case err != nil && plan.Pull:
		return fmt.Errorf("domain %q: the pull job started, but reading it back failed: %w", dom.Name(), err)
	case err != nil || !ok:
		// A push of small disks can be over already.
		out.notes.Infof("Backup started and already finished: see 'vbackup backup-status %s --completed'", dom.Name())
		return nil
	}
	say := out.notes.Infof
	say("Backup started: %s", j.Mode())
	if plan.Checkpoint != "" {
		say("Checkpoint %s created with the job", plan.Checkpoint)
	}
	if j.Pull {
		for _, d := range j.Disks {
			say("  %-6s %s", d.Name, j.ExportURI(d))
			if d.ExportBitmap != "" {
				say("  %-6s changed blocks: meta context %s (incremental from %s)", "", d.Bitmap(), d.Incremental)
			}
		}
		say("Read the exports, then end the job with: vbackup backup-end %s", dom.Name())
		return nil
	}
	for _, d := range j.Disks {
		mode := "full"
		if d.Incremental != "" {
			mode = "incremental from " + d.Incremental
		}
		say("  %-6s -> %s (%s)", d.Name, d.Target, mode)
	}
	return nil
}

// fetchAndEnd reads the pull job's exports and ends the job; when the fetch
// fails, the job's checkpoint is discarded with it, since nothing holds the
// data it would claim.
func fetchAndEnd(ctx context.Context, env *Env, out output, dom virt.Domain, sockets job.Sockets, opts backupBeginOptions) error {
	j, ok, err := job.Current(ctx, dom)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("domain %q: the pull job ended before its exports could be read", dom.Name())
	}
	fetchErr := fetchInto(ctx, env, out, dom, j, backupFetchOptions{Dir: opts.FetchDir, Format: opts.Spec.Format, Backing: opts.Backing,
		Connections: 4, TLSCerts: opts.TLSCerts, BWLimit: opts.BWLimit})
	// The job ends whatever the fetch did, and so does its checkpoint when
	// the fetch failed: after a Ctrl-C too.
	lv := context.WithoutCancel(ctx)
	if err := job.End(lv, dom); err != nil {
		return err
	}
	sockets.Remove(dom.Name())
	if fetchErr != nil {
		if err := job.Discard(lv, dom, j.Checkpoint(), out.notes); err != nil {
			return err
		}
	}
	if j.HasRecord {
		_ = dom.ClearBackupRecord(lv)
	}
	if fetchErr != nil {
		return fmt.Errorf("%w; the job was ended, and its checkpoint discarded", fetchErr)
	}
	out.notes.Notef("Backup job of domain %s ended.", dom.Name())
	return nil
}

// beginShielded starts the job; while the guest may be frozen, Ctrl-C and
// SIGTERM wait for the thaw instead of ending vbackup. A signal that came
// while a job started anyway is returned as interrupted (after is non-nil),
// for the caller to say that the job runs.
func beginShielded(ctx context.Context, env *Env, dom virt.Domain, plan job.Plan, reuse bool, rec virt.BackupRecord, out output) (after, err error) {
	if !plan.Freeze.Freeze {
		return nil, job.Begin(ctx, dom, plan, reuse, rec, out.notes)
	}
	bctx, intr := interruptible(ctx, env, interruptText{
		ending: "thawing the guest's filesystems first",
		again:  fmt.Sprintf("The guest may still be frozen: 'virsh domfsthaw %s' thaws it; 'vbackup backup-end %s' ends a job that started.", dom.Name(), dom.Name()),
	})
	err = job.Begin(bctx, dom, plan, reuse, rec, out.notes)
	// Before stop, which cancels bctx too, a cancelled bctx is a signal.
	var signalled error
	if bctx.Err() != nil && ctx.Err() == nil {
		signalled = context.Cause(bctx)
	}
	intr.stop()
	if err != nil {
		return nil, intr.wrap(err)
	}
	return signalled, nil
}
