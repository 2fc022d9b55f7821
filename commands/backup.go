package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v3"

	"vbackup/chain"
	"vbackup/engine"
	"vbackup/job"
	"vbackup/progress"
)

type backupOptions struct {
	Domain   string
	Many     manyOptions
	Dir      string   // the backup folder of the domain
	Level    string   // auto, full or inc
	Disks    []string // only these disks; all by default
	Push     bool     // libvirt writes the images (default: vbackup reads the pull export)
	MaxChain int      // a full backup once the chain has this many incrementals; 0: no limit
	Compress string   // "", zlib or zstd
	DryRun   bool     // say what the backup would do, change nothing
	Quiesce  job.Quiesce
	BWLimit  int64 // bytes per second read, for the whole run; 0: no cap
	JSON     bool
	Quiet    bool
}

func newBackupCommand(env *Env, run func(context.Context, *Env, backupOptions) error) *cli.Command {
	return withManyFlags(&cli.Command{
		Name:      "backup",
		Usage:     "back up a domain, running or shut off, into a chain of qcow2 images: full, then incremental",
		ArgsUsage: "DOMAIN",
		Description: "Backs up every disk of DOMAIN into DIR/<checkpoint>/DISK.qcow2, with a checkpoint\n" +
			"named vbackup-<UTC time> and a manifest (DIR/<checkpoint>/manifest.json).\n" +
			"--level auto (the default) makes a full backup when DIR holds none of the domain,\n" +
			"or when the last backup's checkpoint is gone or broken in libvirt (after\n" +
			"redefining it from DIR has failed); otherwise an incremental one: a qcow2 overlay per\n" +
			"disk whose backing file is the same disk in the backup before. A disk new since\n" +
			"the last backup gets a full image; a raw disk, which cannot carry a bitmap, is\n" +
			"copied whole every time. If anything fails, the checkpoint is deleted and DIR is\n" +
			"left as it was. A shut-off domain's images are read directly (qemu-nbd), and it cannot\n" +
			"start until the backup is in place. Each folder keeps its own chain and checkpoints.\n" +
			"When a running guest's QEMU agent answers, its filesystems are frozen while the job\n" +
			"starts (--quiesce auto), so the backup holds them clean, not as after a power cut.\n" +
			"--dry-run says what the next backup would do, and why, and changes nothing.\n" +
			"Restore with 'vbackup restore', check with 'vbackup verify'.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "the domain's backup folder `DIR` (created if missing)", Required: true},
			&cli.StringFlag{Name: "level", Usage: "`LEVEL`: auto, full or inc", Value: chain.WantAuto},
			&cli.StringSliceFlag{Name: "disk", Usage: "back up only disk `NAME` (repeatable)"},
			&cli.BoolFlag{Name: "push", Usage: "libvirt writes the images (instead of vbackup reading them over NBD)"},
			&cli.StringFlag{Name: "max-chain", Usage: "make a full backup once the folder's chain has `N` incrementals since its last full (default: no limit; prune bounds the chain)"},
			&cli.StringFlag{Name: "compress", Usage: "compress the images' clusters: `KIND` zstd, zlib or none; QEMU and qemu-img read them as they are", Value: "none"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print what the backup would do for each disk (full or incremental, from which backup, and why), and change nothing"},
			&cli.StringFlag{Name: "quiesce", Usage: "freeze the guest's filesystems while the job starts, through its guest agent: `WHEN` auto (if the agent answers), yes (or fail) or no", Value: string(job.QuiesceAuto)},
			&cli.BoolFlag{Name: "json", Usage: "print progress and the result as JSON lines on stdout"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
			bwlimitFlag("read from the exports or images"),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := backupArgs(cmd)
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
			if cmd.IsSet("max-chain") {
				if opts.MaxChain, err = count(cmd.String("max-chain")); err != nil || opts.MaxChain < 1 {
					return usageErrorf(cmd, "--max-chain %q: give the number of incrementals after which a full backup is made, 1 or more", cmd.String("max-chain"))
				}
				if opts.Level == chain.WantInc {
					return usageErrorf(cmd, "--max-chain cannot be used with --level inc, which asks for an incremental whatever the chain's length")
				}
			}
			switch c := cmd.String("compress"); {
			case c == "zstd" || c == "zlib":
				opts.Compress = c
				if opts.Push {
					return usageErrorf(cmd, "--compress %s cannot be used with --push: libvirt writes a push's images, uncompressed; leave out one of them", c)
				}
			case c != "none":
				return usageErrorf(cmd, "--compress %q: use zstd, zlib or none", c)
			}
			if opts.Quiesce, err = job.ParseQuiesce(cmd.String("quiesce")); err != nil {
				return &UsageError{Cmd: cmd, Err: err}
			}
			if opts.BWLimit, err = bwlimitOption(cmd); err != nil {
				return err
			}
			if opts.BWLimit > 0 && opts.Push {
				return usageErrorf(cmd, "--bwlimit cannot be used with --push: libvirt writes a push's images itself; leave out one of them")
			}
			if opts.DryRun = cmd.Bool("dry-run"); opts.DryRun {
				if err := dryRunFlags(cmd); err != nil {
					return err
				}
			}
			if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
				return err
			}
			if opts.Many, err = manyFlags(cmd, a); err != nil {
				return err
			}
			return run(ctx, env, opts)
		},
	})
}

func runBackup(ctx context.Context, env *Env, opts backupOptions) error {
	if opts.Many.On {
		return runBackupMany(ctx, env, opts)
	}
	conn, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	if opts.DryRun {
		return runBackupDryRun(ctx, env, dom, opts)
	}
	socks, err := sockets(ctx, env)
	if err != nil {
		return err
	}
	out := newOutput(env, opts.JSON, opts.Quiet)
	noteRedials(conn, out.notes)
	host, _ := os.Hostname()
	req := engine.BackupRequest{Dir: opts.Dir, Level: opts.Level, Disks: opts.Disks, Push: opts.Push, MaxChain: opts.MaxChain, Compress: opts.Compress, Now: env.Now,
		Host: host, PID: os.Getpid(), Sockets: socks, Reconnect: env.Reconnect, Quiesce: opts.Quiesce}
	req.Limit = newLimiter(out.notes, opts.BWLimit)
	b, err := engine.PrepareBackup(ctx, dom, req, out.notes)
	if err != nil {
		return err
	}
	defer b.Close()
	ctx, intr := interruptible(ctx, env, interruptText{
		ending:     "ending the backup; nothing of it will be kept",
		committing: "the backup is complete and being put in place; it is kept unless that fails",
		again:      fmt.Sprintf("If a job is left, the next 'vbackup backup %s' ends it and deletes its checkpoint.", dom.Name()),
	})
	defer intr.stop()
	done, err := b.Run(ctx, out.printer, intr.committing)
	if err != nil {
		return intr.wrap(err)
	}
	return reportBackup(out, done)
}

// reportBackup prints what the backup holds.
func reportBackup(out output, b *chain.Backup) error {
	if out.json {
		return json.NewEncoder(out.data).Encode(struct {
			Type string `json:"type"`
			chain.Manifest
			Dir string `json:"dir"`
		}{"backup", b.Manifest, b.Dir})
	}
	out.notes.Infof("Backup %s complete: %s, in %s", b.Name(), b.Level, b.Dir)
	for _, d := range b.Disks {
		out.notes.Infof("  %-6s %-11s %10s copied, of %-10s %s", d.Name, d.Level, progress.Capacity(d.Copied), progress.Capacity(d.VirtualSize), d.Checksum)
	}
	return nil
}
