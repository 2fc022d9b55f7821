package commands

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v3"

	exportfetch "vbackup/fetch"
	"vbackup/virt"
)

type backupFetchOptions struct {
	Domain      string
	Dir         string
	Disks       []string // only these; all when empty
	Format      string   // for full exports: raw or qcow2
	Backing     string   // folder of the previous backup, for incremental overlays
	Connections int
	JSON        bool
	Quiet       bool
}

func newBackupFetchCommand(env *Env, run func(context.Context, *Env, backupFetchOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "backup-fetch",
		Usage:     "read a running pull backup's exports into files, with per-disk progress",
		ArgsUsage: "DOMAIN",
		Description: "Reads every export of the domain's pull job (started by vbackup backup-begin --pull,\n" +
			"or by virsh) into DIR, one file per disk named after it (DIR/vda.qcow2). A full\n" +
			"export becomes a sparse raw file or a qcow2; an incremental one a qcow2 holding only\n" +
			"the changed extents, whose backing file, with --backing DIR, is that folder's file\n" +
			"for the same disk, so the chain reads as the disk at the new checkpoint. Files are\n" +
			"written as NAME.partial and renamed when complete. The job keeps running: end it\n" +
			"with backup-end (so a failed fetch can be retried).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "write the files into `DIR` (created if missing)", Required: true},
			&cli.StringSliceFlag{Name: "disk", Usage: "fetch only disk `NAME` (repeatable)"},
			&cli.StringFlag{Name: "format", Usage: "`FORMAT` of a full export's file: qcow2 or raw", Value: "qcow2"},
			&cli.StringFlag{Name: "backing", Usage: "incremental: back each file by the same disk's file in `DIR`"},
			&cli.IntFlag{Name: "connections", Usage: "NBD connections per disk, `N` (if the server allows several)", Value: 4},
			&cli.BoolFlag{Name: "json", Usage: "print progress as JSON lines on stdout"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN")
			if err != nil {
				return err
			}
			opts := backupFetchOptions{Domain: a[0], Dir: cmd.String("to"), Disks: cmd.StringSlice("disk"), Format: cmd.String("format"),
				Backing: cmd.String("backing"), Connections: int(cmd.Int("connections")), JSON: cmd.Bool("json"), Quiet: cmd.Bool("quiet")}
			if err := fetchFlagRules(cmd, opts.Format, opts.Connections); err != nil {
				return err
			}
			if err := exclusive(cmd, "json", "quiet"); err != nil {
				return err
			}
			return run(ctx, env, opts)
		},
	}
}

func fetchFlagRules(cmd *cli.Command, format string, conns int) error {
	if format != "qcow2" && format != "raw" {
		return usageErrorf(cmd, "--format %q: use qcow2 or raw", format)
	}
	if conns < 1 || conns > 64 {
		return usageErrorf(cmd, "--connections %d: use 1 to 64", conns)
	}
	return nil
}

func runBackupFetch(ctx context.Context, env *Env, opts backupFetchOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	b, ok, err := currentBackup(ctx, dom)
	if err != nil {
		return err
	}
	if !ok || !b.pull() {
		return fmt.Errorf("domain %q has no pull backup job running; start one with 'vbackup backup-begin %s --pull' (or use --fetch DIR there)", dom.Name(), dom.Name())
	}
	if err := fetchJob(ctx, env, dom, b, opts); err != nil {
		return fmt.Errorf("%w; the job still runs: retry, or end it with 'vbackup backup-end %s --discard-checkpoint'", err, dom.Name())
	}
	return nil
}

// fetchJob reads the exports of a running pull job into opts.Dir.
func fetchJob(ctx context.Context, env *Env, dom virt.Domain, b runningBackup, opts backupFetchOptions) error {
	srv := serverOf(b.def.Pull.Server)
	all := jobDisks(b.def)
	var names []string
	for _, d := range all {
		names = append(names, d.Name)
	}
	for _, want := range opts.Disks {
		if !slices.Contains(names, want) {
			return fmt.Errorf("domain %q: the pull job has no disk %q; its disks are %s", dom.Name(), want, strings.Join(names, ", "))
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return err
	}
	var disks []exportfetch.Disk
	for _, d := range all {
		if len(opts.Disks) > 0 && !slices.Contains(opts.Disks, d.Name) {
			continue
		}
		fd := exportfetch.Disk{Name: d.Name, URI: nbdURI(srv, d.ExportName), Format: opts.Format}
		if d.ExportBitmap != "" {
			// Only a qcow2 can hold just the changed extents over a backing file.
			fd.Bitmap, fd.Format = "qemu:dirty-bitmap:"+d.ExportBitmap, "qcow2"
			if opts.Format == "raw" {
				return fmt.Errorf("disk %s: an incremental export holds only the changes, which a raw file cannot keep apart; use --format qcow2 (and --backing DIR)", d.Name)
			}
			if opts.Backing != "" {
				backing, err := filepath.Abs(filepath.Join(opts.Backing, d.Name+".qcow2"))
				if err != nil {
					return err
				}
				fd.Backing = backing
				if _, err := os.Stat(fd.Backing); err != nil {
					return fmt.Errorf("disk %s: --backing %s: no %s there to build on", d.Name, opts.Backing, filepath.Base(fd.Backing))
				}
			}
		} else if opts.Backing != "" {
			return fmt.Errorf("disk %s: --backing is for incremental exports; this one is full", d.Name)
		}
		fd.Path = filepath.Join(opts.Dir, d.Name+"."+fd.Format)
		disks = append(disks, fd)
	}
	res, err := exportfetch.Run(ctx, disks, exportfetch.Options{
		Connections: opts.Connections,
		Printer:     newPrinter(env, opts.JSON, opts.Quiet),
		Now:         env.Now,
	})
	if err != nil {
		return fmt.Errorf("domain %q: fetching the exports: %w; nothing incomplete was kept", dom.Name(), err)
	}
	if !opts.Quiet && !opts.JSON {
		for _, d := range res.Disks {
			zeroed := ""
			if d.Zeroed > 0 {
				zeroed = ", " + capacity(d.Zeroed) + " zeroed"
			}
			fmt.Fprintf(env.Stdout, "  %-6s -> %s (%s copied%s, of %s)\n", d.Name, d.Path, capacity(d.Copied), zeroed, capacity(d.Size))
		}
	}
	return nil
}
