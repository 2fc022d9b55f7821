package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v3"
	"libvirt.org/go/libvirtxml"

	"vbackup/checkpoint"
	"vbackup/progress"
	"vbackup/virt"
	"vbackup/xmlgen"
)

type backupBeginOptions struct {
	Domain                string
	Spec                  xmlgen.BackupSpec // from the flags; aligned when the job starts
	Server                serverFlag
	ServerSet             bool
	Insecure              bool
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
				ServerSet:             cmd.IsSet("server"),
				Insecure:              cmd.Bool("insecure"),
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
			for _, s := range cmd.StringSlice("disk") {
				d, err := xmlgen.ParseBackupDisk(s)
				if err != nil {
					return &UsageError{Cmd: cmd, Err: err}
				}
				opts.Spec.Disks = append(opts.Spec.Disks, d)
			}
			opts.Server.spec.TLS = cmd.Bool("tls")
			if opts.ServerSet {
				if opts.Server, err = parseServerFlag(cmd.String("server"), cmd.Bool("tls")); err != nil {
					return &UsageError{Cmd: cmd, Err: err}
				}
			}
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
	conn, dom, err := openRunningDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	// --print-xml changes nothing and asks nothing of the job machinery, so
	// it also works where jobs cannot run (libvirt's test driver).
	if !opts.PrintXML {
		job, err := backupPreflight(ctx, env, dom)
		if err != nil {
			return err
		}
		if job {
			return fmt.Errorf("domain %q already has a job running, and libvirt runs one at a time; end it first (for a backup: 'vbackup backup-end %s')", dom.Name(), dom.Name())
		}
	}
	plan, err := planBackup(ctx, env, conn, dom, opts)
	if err != nil {
		removeSocketDir(env, dom.Name())
		return err
	}
	if opts.PrintXML {
		removeSocketDir(env, dom.Name())
		fmt.Fprint(env.Stdout, plan.backupXML)
		if plan.checkpointXML != "" {
			fmt.Fprint(env.Stdout, plan.checkpointXML)
		}
		return nil
	}
	out := env.Stdout
	switch {
	case opts.Quiet:
		out = io.Discard
	case opts.JSON:
		out = env.Stderr // stdout carries the JSON lines
	}
	if err := startBackup(ctx, env, out, dom, plan, opts.ReuseExternal); err != nil {
		removeSocketDir(env, dom.Name())
		return err
	}
	if opts.FetchDir != "" {
		return fetchAndEnd(ctx, env, dom, opts)
	}
	if !opts.Wait {
		return nil
	}
	return watchBackup(ctx, env, dom, watchOptions{Printer: newPrinter(env, opts.JSON, opts.Quiet), Timeout: opts.Timeout})
}

// newPrinter picks how progress is shown: JSON lines on stdout, bars on a
// terminal, plain lines in a log, or nothing.
func newPrinter(env *Env, json, quiet bool) progress.Printer {
	switch {
	case quiet:
		return progress.NewQuiet()
	case json:
		return progress.NewJSON(env.Stdout)
	case env.StderrTTY:
		return progress.NewTerminal(env.Stderr, env.Width())
	}
	return progress.NewPlain(env.Stderr, 5*time.Second)
}

// backupPreflight settles what an earlier job left and reports whether a
// job runs now.
func backupPreflight(ctx context.Context, env *Env, dom virt.Domain) (bool, error) {
	job, err := dom.Job(ctx, false)
	if errors.Is(err, virt.ErrUnsupported) {
		return false, noBackupJobs(dom, err)
	}
	if err != nil {
		return false, fmt.Errorf("domain %q: %w", dom.Name(), err)
	}
	if job.State == virt.JobRunning {
		return true, nil
	}
	if err := settle(ctx, env, dom); err != nil {
		return false, err
	}
	return false, busyBackup(ctx, dom)
}

// backupPlan is what a job will be started with.
type backupPlan struct {
	pull                     bool
	checkpoint               string
	backupXML, checkpointXML string
}

func planBackup(ctx context.Context, env *Env, conn virt.Conn, dom virt.Domain, opts backupBeginOptions) (backupPlan, error) {
	plan := backupPlan{backupXML: opts.backupXML, checkpointXML: opts.checkpointXML, checkpoint: opts.Spec.Checkpoint}
	var incremental string
	if opts.BackupXMLFile != "" {
		var def libvirtxml.DomainBackup
		if err := def.Unmarshal(opts.backupXML); err != nil {
			return plan, fmt.Errorf("--backupxml %s is not a <domainbackup> document: %w", opts.BackupXMLFile, err)
		}
		plan.pull, incremental = def.Pull != nil, def.Incremental
	}
	if opts.CheckpointXMLFile != "" {
		var def libvirtxml.DomainCheckpoint
		if err := def.Unmarshal(opts.checkpointXML); err != nil {
			return plan, fmt.Errorf("--checkpointxml %s is not a <domaincheckpoint> document: %w", opts.CheckpointXMLFile, err)
		}
		plan.checkpoint = def.Name
	}
	if opts.BackupXMLFile == "" {
		incremental = opts.Spec.Incremental
	}
	if incremental != "" {
		if _, err := dom.Checkpoint(ctx, incremental); err != nil {
			return plan, checkpointErr(ctx, dom, incremental, err)
		}
	}
	if opts.BackupXMLFile != "" && opts.CheckpointXMLFile != "" {
		return plan, nil
	}
	disks, err := dom.Disks(ctx)
	if err != nil {
		return plan, fmt.Errorf("domain %q: %w", dom.Name(), err)
	}
	spec := opts.Spec
	if opts.BackupXMLFile == "" {
		plan.pull = spec.Pull
		if spec.Pull {
			srv := opts.Server
			if spec.Server, err = prepareServer(env, dom.Name(), disks, &srv, opts.ServerSet, opts.Insecure, localURI(conn.URI())); err != nil {
				return plan, err
			}
		}
		var notes []string
		if spec, notes, err = xmlgen.AlignBackup(spec, dom.Name(), disks, env.Now()); err != nil {
			return plan, fmt.Errorf("domain %q: %w", dom.Name(), err)
		}
		for _, n := range notes {
			fmt.Fprintf(env.Stderr, "note: %s\n", n)
		}
		if err := checkTargets(spec, opts.ReuseExternal); err != nil {
			return plan, err
		}
		if plan.backupXML, err = xmlgen.BackupXML(spec); err != nil {
			return plan, err
		}
	}
	if opts.CheckpointXMLFile == "" && spec.Checkpoint != "" {
		if plan.checkpointXML, err = jobCheckpointXML(ctx, env, dom, spec, opts.CheckpointDescription, disks); err != nil {
			return plan, err
		}
	}
	return plan, nil
}

// jobCheckpointXML builds the checkpoint made with a job: a bitmap on exactly
// the disks the job backs up, so that it never claims a disk's changes were
// saved when that disk was left out of the job.
func jobCheckpointXML(ctx context.Context, env *Env, dom virt.Domain, spec xmlgen.BackupSpec, description string, disks []virt.Disk) (string, error) {
	switch _, err := dom.Checkpoint(ctx, spec.Checkpoint); {
	case err == nil:
		return "", fmt.Errorf("domain %q already has a checkpoint %q; choose another --checkpoint name", dom.Name(), spec.Checkpoint)
	case !errors.Is(err, virt.ErrNoCheckpoint):
		return "", checkpointErr(ctx, dom, "", err)
	}
	cp := xmlgen.CheckpointSpec{Name: spec.Checkpoint, Description: description}
	byName := map[string]virt.Disk{}
	for _, d := range disks {
		byName[d.Target] = d
	}
	bitmaps := 0
	for _, d := range spec.Disks {
		mode := "no"
		if !d.Skip && byName[d.Name].CanCarryBitmap() {
			mode, bitmaps = "bitmap", bitmaps+1
		}
		cp.Disks = append(cp.Disks, xmlgen.DiskSpec{Name: d.Name, Checkpoint: mode})
	}
	if bitmaps == 0 {
		return "", fmt.Errorf("domain %q: --checkpoint %s would track no disk: none of the disks this job backs up can carry a bitmap (only qcow2 disks can)", dom.Name(), spec.Checkpoint)
	}
	return xmlgen.CheckpointXML(cp)
}

// checkTargets refuses to start a job that would write over an existing
// file, and a --reuse-external job whose files are missing.
func checkTargets(spec xmlgen.BackupSpec, reuse bool) error {
	for _, path := range spec.Targets() {
		_, err := os.Stat(path)
		switch {
		case err == nil && !reuse:
			return fmt.Errorf("%s exists already; vbackup never writes over a backup: move it away, pick another --target-dir, or pass --reuse-external to write into it", path)
		case errors.Is(err, os.ErrNotExist) && reuse:
			return fmt.Errorf("--reuse-external: %s does not exist; create it first (qemu-img create), or leave out --reuse-external", path)
		}
	}
	return nil
}

// fetchAndEnd reads the pull job's exports and ends the job; when the fetch
// fails, the job's checkpoint is discarded with it, since nothing holds the
// data it would claim.
func fetchAndEnd(ctx context.Context, env *Env, dom virt.Domain, opts backupBeginOptions) error {
	b, ok, err := currentBackup(ctx, dom)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("domain %q: the pull job ended before its exports could be read", dom.Name())
	}
	fetchErr := fetchJob(ctx, env, dom, b, backupFetchOptions{Dir: opts.FetchDir, Format: opts.Spec.Format, Backing: opts.Backing,
		Connections: 4, TLSCerts: opts.TLSCerts, JSON: opts.JSON, Quiet: opts.Quiet})
	if err := dom.AbortJob(ctx); err != nil {
		return fmt.Errorf("domain %q: ending the pull job: %w", dom.Name(), err)
	}
	if err := waitJobEnd(ctx, dom, 60*time.Second); err != nil {
		return err
	}
	removeSocketDir(env, dom.Name())
	if fetchErr != nil && b.hasRec {
		if err := discardCheckpoint(ctx, env, dom, b.rec.Checkpoint); err != nil {
			return err
		}
	}
	_ = clearRecord(ctx, dom, b)
	if fetchErr != nil {
		return fmt.Errorf("%w; the job was ended, and its checkpoint discarded", fetchErr)
	}
	fmt.Fprintf(env.Stderr, "Backup job of domain %s ended.\n", dom.Name())
	return nil
}
