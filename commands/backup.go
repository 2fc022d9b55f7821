package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/urfave/cli/v3"

	"vbackup/chain"
	"vbackup/virt"
)

type backupOptions struct {
	Domain string
	Dir    string   // the backup folder of the domain
	Level  string   // auto, full or inc
	Disks  []string // only these disks; all by default
	Push   bool     // libvirt writes the images (default: vbackup reads the pull export)
	JSON   bool
	Quiet  bool
}

func newBackupCommand(env *Env, run func(context.Context, *Env, backupOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "back up a running domain into a chain of qcow2 images: full, then incremental",
		ArgsUsage: "DOMAIN",
		Description: "Backs up every disk of DOMAIN into DIR/<checkpoint>/DISK.qcow2, with a checkpoint\n" +
			"named vbackup-<UTC time> and a manifest (DIR/<checkpoint>/manifest.json).\n" +
			"--level auto (the default) makes a full backup when DIR holds none of the domain,\n" +
			"or when the last backup's checkpoint is gone or broken in libvirt (after\n" +
			"redefining it from DIR has failed); otherwise an incremental one: a qcow2 overlay per\n" +
			"disk whose backing file is the same disk in the backup before. A disk new since\n" +
			"the last backup gets a full image; a raw disk, which cannot carry a bitmap, is\n" +
			"copied whole every time. If anything fails, the checkpoint is deleted and DIR is\n" +
			"left as it was. Restore with 'vbackup restore', check with 'vbackup verify'.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "the domain's backup folder `DIR` (created if missing)", Required: true},
			&cli.StringFlag{Name: "level", Usage: "`LEVEL`: auto, full or inc", Value: chain.WantAuto},
			&cli.StringSliceFlag{Name: "disk", Usage: "back up only disk `NAME` (repeatable)"},
			&cli.BoolFlag{Name: "push", Usage: "libvirt writes the images (instead of vbackup reading them over NBD)"},
			&cli.BoolFlag{Name: "json", Usage: "print progress and the result as JSON lines on stdout"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN")
			if err != nil {
				return err
			}
			opts := backupOptions{Domain: a[0], Dir: cmd.String("to"), Level: cmd.String("level"), Disks: cmd.StringSlice("disk"),
				Push: cmd.Bool("push"), JSON: cmd.Bool("json"), Quiet: cmd.Bool("quiet")}
			if err := exclusive(cmd, "json", "quiet"); err != nil {
				return err
			}
			if l := opts.Level; l != chain.WantAuto && l != chain.WantFull && l != chain.WantInc {
				return usageErrorf(cmd, "--level %q: use auto, full or inc", l)
			}
			if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
				return err
			}
			return run(ctx, env, opts)
		},
	}
}

// backupRun is one 'vbackup backup': what it decided and what it holds.
type backupRun struct {
	env         *Env
	opts        backupOptions
	dom         virt.Domain
	store       *chain.Store
	out         io.Writer // messages for the user (discarded by --quiet, stderr with --json)
	name        string    // of the checkpoint, and the backup
	dec         chain.Decision
	pending     *chain.Pending
	diskInfo    []chain.DiskInfo // the disks to back up, as the decision saw them
	domainDisks []string         // every disk of the domain
	allDisks    []virt.Disk      // the same, as libvirt describes them
	uuid        string           // the domain's
	started     bool             // the job started: its checkpoint exists
	watching    atomic.Bool      // a push job's watcher handles Ctrl-C itself,
	toWatcher   chan os.Signal   // passed on to it from here
	commitMu    sync.Mutex       // orders committing with a Ctrl-C that ends the run
	committing  bool             // the backup is being put in place: Ctrl-C no longer ends it
}

func runBackup(ctx context.Context, env *Env, opts backupOptions) error {
	_, dom, err := openRunningDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	// A folder that is not there yet is made only once the backup starts:
	// a refused backup changes nothing.
	_, statErr := os.Stat(opts.Dir)
	if statErr == nil {
		unlock, err := chain.Lock(opts.Dir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	r := &backupRun{env: env, opts: opts, dom: dom, out: env.Stdout, toWatcher: make(chan os.Signal, 2)}
	switch {
	case opts.Quiet:
		r.out = io.Discard
	case opts.JSON:
		r.out = env.Stderr
	}
	if r.store, err = chain.Open(opts.Dir); err != nil {
		return err
	}
	if err := r.checkDomain(ctx); err != nil {
		return err
	}
	if err := r.decide(ctx); err != nil {
		return err
	}
	if statErr != nil {
		unlock, err := chain.Lock(opts.Dir)
		if err != nil {
			return err
		}
		defer unlock()
		if now, err := chain.Open(opts.Dir); err != nil || len(now.Backups) > 0 {
			return fmt.Errorf("another vbackup command wrote %s meanwhile; run this one again", opts.Dir)
		}
	}
	left, err := r.store.Leftovers()
	if err != nil {
		return err
	}
	for _, name := range left {
		fmt.Fprintf(env.Stderr, "note: removed the unfinished backup %s that an interrupted run left in %s\n", name, opts.Dir)
	}
	ctx, stop := r.interruptible(ctx)
	defer stop()
	b, err := r.run(ctx)
	if err != nil {
		return r.fail(err)
	}
	return r.report(b)
}

// checkDomain makes sure the folder is this domain's and that no job runs.
func (r *backupRun) checkDomain(ctx context.Context) error {
	uuid, err := r.dom.UUID(ctx)
	if err != nil {
		return err
	}
	r.uuid = uuid
	if last := r.store.Last(); last != nil && last.Domain.UUID != uuid {
		return fmt.Errorf("%s holds the backups of domain %s (UUID %s), and %s is another domain (UUID %s): give each domain its own folder",
			r.opts.Dir, last.Domain.Name, last.Domain.UUID, r.dom.Name(), uuid)
	}
	// A job a killed 'vbackup backup' left is ended here, its checkpoint deleted.
	if err := settle(ctx, r.env, r.dom); err != nil {
		return err
	}
	job, err := r.dom.Job(ctx, false)
	if errors.Is(err, virt.ErrUnsupported) {
		return noBackupJobs(r.dom, err)
	}
	if err != nil {
		return err
	}
	if job.State == virt.JobRunning {
		return fmt.Errorf("domain %q already has a job running, and libvirt runs one at a time; wait for it, or end it (for a backup: 'vbackup backup-end %s')", r.dom.Name(), r.dom.Name())
	}
	return busyBackup(ctx, r.dom)
}

// decide picks the level of every disk and names the backup.
func (r *backupRun) decide(ctx context.Context) error {
	disks, err := r.disks(ctx)
	if err != nil {
		return err
	}
	last := r.store.Last()
	ok, why := false, ""
	if last != nil && r.opts.Level != chain.WantFull {
		if ok, why, err = r.usable(ctx, last); err != nil {
			return err
		}
	}
	r.diskInfo = disks
	if r.dec, err = chain.Decide(r.opts.Level, r.dom.Name(), last, ok, why, disks); err != nil {
		return err
	}
	r.name, err = r.checkpointName(ctx)
	return err
}

// disks lists the disks to back up: every writable disk with a medium (not a
// CD-ROM), or those --disk names.
func (r *backupRun) disks(ctx context.Context) ([]chain.DiskInfo, error) {
	all, err := r.dom.Disks(ctx)
	if err != nil {
		return nil, fmt.Errorf("domain %q: %w", r.dom.Name(), err)
	}
	r.allDisks = all
	var names []string
	for _, d := range all {
		names = append(names, d.Target)
	}
	r.domainDisks = names
	for _, want := range r.opts.Disks {
		if !slices.Contains(names, want) {
			return nil, fmt.Errorf("domain %q has no disk %q; its disks are %s", r.dom.Name(), want, strings.Join(names, ", "))
		}
	}
	var out []chain.DiskInfo
	for _, d := range all {
		listed := slices.Contains(r.opts.Disks, d.Target)
		switch {
		case len(r.opts.Disks) > 0 && !listed:
			continue
		case listed && (d.Empty() || d.ReadOnly):
			return nil, fmt.Errorf("--disk %s: the disk is empty or read-only: there is nothing of it to back up; leave it out", d.Target)
		case d.Empty() || d.ReadOnly || d.Device == "cdrom":
			continue
		}
		info := chain.DiskInfo{Name: d.Target, CanBitmap: d.CanCarryBitmap()}
		if !info.CanBitmap {
			info.Why = fmt.Sprintf("a %s disk", d.Format)
		}
		out = append(out, info)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("domain %q has no disk to back up: every disk is empty, read-only or a CD-ROM", r.dom.Name())
	}
	return out, nil
}

// checkpointName is vbackup-<UTC time>, made unique in libvirt and DIR.
func (r *backupRun) checkpointName(ctx context.Context) (string, error) {
	base := "vbackup-" + r.env.Now().UTC().Format("20060102T150405Z")
	for i := 1; i < 100; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		_, err := r.dom.Checkpoint(ctx, name)
		if errors.Is(err, virt.ErrNoCheckpoint) {
			if _, ferr := r.store.Find(name); ferr != nil {
				if _, serr := os.Lstat(filepath.Join(r.opts.Dir, name)); serr != nil {
					return name, nil
				}
			}
			continue
		}
		if err != nil {
			return "", checkpointErr(ctx, r.dom, "", err)
		}
	}
	return "", fmt.Errorf("no free checkpoint name after %s", base)
}

// interruptible ends ctx on Ctrl-C or SIGTERM, so that the run cleans up; a
// second signal leaves at once.
func (r *backupRun) interruptible(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	sigs, stopSigs := r.env.Signals()
	done := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case <-done:
				return
			case s := <-sigs:
				if r.watching.Load() {
					// The push's watcher ends the job; a signal that comes
					// before it listens waits for it.
					select {
					case r.toWatcher <- s:
					default:
					}
					continue
				}
				n++
				if n > 1 {
					r.env.Exit(ExitFailure)
					return
				}
				r.commitMu.Lock()
				if r.committing {
					// Its copy and checksums are done: ending it now would
					// throw away a good backup to save a second.
					fmt.Fprintf(r.env.Stderr, "\n%s: the backup is complete and being put in place; it is kept unless that fails (again to leave at once)\n", s)
				} else {
					fmt.Fprintf(r.env.Stderr, "\n%s: ending the backup; nothing of it will be kept (again to leave at once)\n", s)
					cancel(fmt.Errorf("interrupted by %s", s))
				}
				r.commitMu.Unlock()
			}
		}
	}()
	return ctx, func() { close(done); stopSigs(); cancel(nil) }
}

// report prints what the backup holds.
func (r *backupRun) report(b *chain.Backup) error {
	if r.opts.JSON {
		return json.NewEncoder(r.env.Stdout).Encode(struct {
			Type string `json:"type"`
			chain.Manifest
			Dir string `json:"dir"`
		}{"backup", b.Manifest, b.Dir})
	}
	fmt.Fprintf(r.out, "Backup %s complete: %s, in %s\n", b.Name(), b.Level, b.Dir)
	for _, d := range b.Disks {
		fmt.Fprintf(r.out, "  %-6s %-11s %10s copied, of %-10s %s\n", d.Name, d.Level, capacity(d.Copied), capacity(d.VirtualSize), d.Checksum)
	}
	return nil
}
