package commands

import (
	"context"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v3"

	"vbackup/checkpoint"
	"vbackup/engine"
	"vbackup/progress"
)

type restoreOptions struct {
	From    string   // the backup folder
	To      string   // where the images go
	At      string   // a backup (checkpoint) name, or latest
	Format  string   // of the images: qcow2 or raw
	Disks   []string // only these; all by default
	Define  string   // define a domain of this name on the images
	BWLimit int64    // bytes per second read from the backup; 0: no cap
	Pool    string   // with Define: the images go into this storage pool (restore_pool.go)
	JSON    bool
	Quiet   bool

	Instant bool              // overlays on the backup instead of copies (restore_instant.go)
	Start   bool              // start the defined domain
	Finish  string            // a domain whose instant restore to finish
	Targets map[string]string // --disk NAME=TARGET: disk onto an existing device or file
}

func newRestoreCommand(env *Env, run func(context.Context, *Env, restoreOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "write each disk of a backup as one standalone image, checked against its manifest",
		Description: "Reads each disk's chain (the full image and the overlays up to --at) and writes\n" +
			"OUTDIR/DISK.qcow2 (or .raw), equal to the disk at that backup's checkpoint; each image\n" +
			"is then read back and its content checksum compared with the manifest. Existing\n" +
			"files are never written over. --define NAME also defines a new domain (started with --start)\n" +
			"from the saved definition: the new name, a new UUID and MAC addresses, and its disks\n" +
			"on the restored images.\n\n" + instantHelp + poolHelp,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the backup folder `DIR`"},
			&cli.StringFlag{Name: "to", Usage: "write the images into `OUTDIR` (created if missing)"},
			&cli.StringFlag{Name: "at", Usage: "the backup to restore: its `CHECKPOINT` name, or latest", Value: "latest"},
			&cli.StringFlag{Name: "format", Usage: "image `FORMAT`: qcow2 or raw", Value: "qcow2"},
			&cli.StringSliceFlag{Name: "disk", Usage: "restore only disk `NAME` (repeatable); NAME=TARGET writes it onto an existing block device or file"},
			&cli.StringFlag{Name: "define", Usage: "define a new domain `NAME` running from the restored images"},
			&cli.BoolFlag{Name: "json", Usage: "print progress as JSON lines on stdout"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
			bwlimitFlag("read from the backup"),
			poolFlag(),
		}, instantFlags()...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			if _, err := args(cmd); err != nil {
				return err
			}
			var err error
			opts := restoreOptions{From: cmd.String("from"), To: cmd.String("to"), At: cmd.String("at"), Format: cmd.String("format"),
				Disks: cmd.StringSlice("disk"), Define: cmd.String("define"), JSON: cmd.Bool("json"), Quiet: cmd.Bool("quiet"),
				Instant: cmd.Bool("instant"), Start: cmd.Bool("start"), Finish: cmd.String("finish"), Pool: cmd.String("pool")}
			if err := exclusive(cmd, "json", "quiet"); err != nil {
				return err
			}
			if opts.Disks, opts.Targets, err = splitTargets(cmd, opts.Disks); err != nil {
				return err
			}
			if err := poolFlags(cmd, opts); err != nil {
				return err
			}
			if err := restoreModes(cmd, opts); err != nil {
				return err
			}
			if opts.BWLimit, err = bwlimitOption(cmd); err != nil {
				return err
			}
			if err := restoreBWLimit(cmd, opts); err != nil {
				return err
			}
			if opts.Format != "qcow2" && opts.Format != "raw" {
				return usageErrorf(cmd, "--format %q: use qcow2 or raw", opts.Format)
			}
			if opts.Define != "" {
				// Domain names follow the same rule as checkpoint names, near enough.
				if err := checkpoint.ValidateName(opts.Define); err != nil || strings.ContainsAny(opts.Define, "/") {
					return usageErrorf(cmd, "--define %q: give a domain name of letters, digits, '_', '-' and '.'", opts.Define)
				}
			}
			if opts.To != "" {
				if opts.To, err = filepath.Abs(opts.To); err != nil {
					return err
				}
			}
			return run(ctx, env, opts)
		},
	}
}

func runRestore(ctx context.Context, env *Env, opts restoreOptions) error {
	switch {
	case opts.Finish != "":
		return runRestoreFinish(ctx, env, opts)
	case opts.Instant:
		return runRestoreInstant(ctx, env, opts)
	}
	req := engine.RestoreRequest{From: opts.From, At: opts.At, To: opts.To, Format: opts.Format, Disks: opts.Disks, Define: opts.Define, Now: env.Now,
		Targets: opts.Targets, Pool: opts.Pool}
	if opts.Define != "" {
		var err error
		if req.Conn, err = env.Conn(ctx); err != nil {
			return err
		}
	}
	out := newOutput(env, opts.JSON, opts.Quiet)
	if req.Conn != nil {
		// Images are staged and checked for minutes before they are
		// uploaded (--pool) or a domain defined on them (--define).
		noteRedials(req.Conn, out.notes)
	}
	req.Limit = newLimiter(out.notes, opts.BWLimit)
	ctx, intr := interruptible(ctx, env, interruptText{ending: "stopping the restore; no image is kept"})
	defer intr.stop()
	res, err := engine.Restore(ctx, req, out.printer, out.notes)
	// The images are told even when defining the domain on them failed:
	// they are kept.
	for _, d := range res.Disks {
		if d.Volume != "" {
			out.notes.Infof("  %-6s -> volume %s of pool %s: %s (%s, content checksum matched the manifest before the upload)", d.Name, d.Volume, opts.Pool, d.Path, progress.Capacity(d.Size))
			continue
		}
		out.notes.Infof("  %-6s -> %s (%s, content checksum matches the manifest)", d.Name, d.Path, progress.Capacity(d.Size))
	}
	if err != nil {
		return intr.wrap(err)
	}
	if res.Domain != "" && !opts.Quiet && !opts.Start {
		out.notes.Notef("Domain %s defined on the restored images (not started): 'virsh start %s'", res.Domain, res.Domain)
	}
	return startRestored(ctx, env, opts, res.Domain, out)
}
