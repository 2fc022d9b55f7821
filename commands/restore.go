package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v3"

	"vbackup/chain"
	"vbackup/checkpoint"
	"vbackup/contentsum"
	exportfetch "vbackup/fetch"
	"vbackup/qemunbd"
	"vbackup/virt"
	"vbackup/xmlgen"
)

type restoreOptions struct {
	From   string   // the backup folder
	To     string   // where the images go
	At     string   // a backup (checkpoint) name, or latest
	Format string   // of the images: qcow2 or raw
	Disks  []string // only these; all by default
	Define string   // define a domain of this name on the images
	JSON   bool
	Quiet  bool
}

func newRestoreCommand(env *Env, run func(context.Context, *Env, restoreOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "write each disk of a backup as one standalone image, checked against its manifest",
		Description: "Reads each disk's chain (the full image and the overlays up to --at) and writes\n" +
			"OUTDIR/DISK.qcow2 (or .raw), equal to the disk at that backup's checkpoint; each image\n" +
			"is then read back and its content checksum compared with the manifest. Existing\n" +
			"files are never written over. --define NAME also defines a new domain (not started)\n" +
			"from the saved definition: the new name, a new UUID and MAC addresses, and its disks\n" +
			"on the restored images.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the backup folder `DIR`", Required: true},
			&cli.StringFlag{Name: "to", Usage: "write the images into `OUTDIR` (created if missing)", Required: true},
			&cli.StringFlag{Name: "at", Usage: "the backup to restore: its `CHECKPOINT` name, or latest", Value: "latest"},
			&cli.StringFlag{Name: "format", Usage: "image `FORMAT`: qcow2 or raw", Value: "qcow2"},
			&cli.StringSliceFlag{Name: "disk", Usage: "restore only disk `NAME` (repeatable)"},
			&cli.StringFlag{Name: "define", Usage: "define a new domain `NAME` running from the restored images"},
			&cli.BoolFlag{Name: "json", Usage: "print progress as JSON lines on stdout"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			if _, err := args(cmd); err != nil {
				return err
			}
			opts := restoreOptions{From: cmd.String("from"), To: cmd.String("to"), At: cmd.String("at"), Format: cmd.String("format"),
				Disks: cmd.StringSlice("disk"), Define: cmd.String("define"), JSON: cmd.Bool("json"), Quiet: cmd.Bool("quiet")}
			if err := exclusive(cmd, "json", "quiet"); err != nil {
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
			var err error
			if opts.To, err = filepath.Abs(opts.To); err != nil {
				return err
			}
			return run(ctx, env, opts)
		},
	}
}

func runRestore(ctx context.Context, env *Env, opts restoreOptions) error {
	store, err := openBackups(opts.From)
	if err != nil {
		return err
	}
	b, err := store.Find(opts.At)
	if err != nil {
		return err
	}
	disks, err := restoreDisks(b, opts)
	if err != nil {
		return err
	}
	// Everything that could refuse is asked before anything is written.
	var conn virt.Conn
	if opts.Define != "" {
		if conn, err = env.Conn(ctx); err != nil {
			return err
		}
		switch _, err := conn.Domain(ctx, opts.Define); {
		case err == nil:
			return fmt.Errorf("--define %s: a domain of that name exists already; choose another name", opts.Define)
		case !errors.Is(err, virt.ErrNoDomain):
			return err
		}
	}
	for _, d := range disks {
		if _, err := os.Lstat(d.Path); err == nil {
			return fmt.Errorf("%s exists already; vbackup never writes over a file: move it away or restore into another folder", d.Path)
		}
	}
	if err := os.MkdirAll(opts.To, 0o755); err != nil {
		return err
	}
	var servers []*qemunbd.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	for i, d := range disks {
		md, _ := b.Disk(d.Name)
		srv, err := qemunbd.Serve(ctx, b.File(md), md.Format)
		if err != nil {
			return fmt.Errorf("backup %s, disk %s: %w", b.Name(), d.Name, err)
		}
		servers = append(servers, srv)
		disks[i].URI = srv.URI()
	}
	out := env.Stdout
	if opts.JSON || opts.Quiet {
		out = env.Stderr
	}
	if !opts.Quiet {
		fmt.Fprintf(out, "Restoring backup %s (%s, %s) into %s\n", b.Name(), b.Time.Local().Format("2006-01-02 15:04:05"), b.Level, opts.To)
	}
	if _, err := exportfetch.Run(ctx, disks, exportfetch.Options{Printer: newPrinter(env, opts.JSON, opts.Quiet), Now: env.Now, What: "restore", KeepCache: true}); err != nil {
		// Run removed what it wrote; what is there now is not ours.
		return fmt.Errorf("restoring backup %s: %w; no image was kept", b.Name(), err)
	}
	for _, s := range servers {
		s.Close()
	}
	if err := checkRestored(ctx, b, disks); err != nil {
		for _, d := range disks {
			os.Remove(d.Path)
		}
		return err
	}
	if !opts.Quiet {
		for _, d := range disks {
			md, _ := b.Disk(d.Name)
			fmt.Fprintf(out, "  %-6s -> %s (%s, content checksum matches the manifest)\n", d.Name, d.Path, capacity(md.VirtualSize))
		}
	}
	if opts.Define == "" {
		return nil
	}
	return defineRestored(ctx, env, conn, b, disks, opts)
}

// restoreDisks lists the images to write.
func restoreDisks(b *chain.Backup, opts restoreOptions) ([]exportfetch.Disk, error) {
	var names []string
	for _, d := range b.Disks {
		names = append(names, d.Name)
	}
	for _, want := range opts.Disks {
		if !slices.Contains(names, want) {
			return nil, fmt.Errorf("backup %s has no disk %q; it holds %s", b.Name(), want, strings.Join(names, ", "))
		}
	}
	var out []exportfetch.Disk
	for _, d := range b.Disks {
		if len(opts.Disks) > 0 && !slices.Contains(opts.Disks, d.Name) {
			continue
		}
		out = append(out, exportfetch.Disk{Name: d.Name, Format: opts.Format, Path: filepath.Join(opts.To, d.Name+"."+opts.Format)})
	}
	return out, nil
}

// checkRestored reads every restored image back and compares its content
// with the checksum the backup recorded.
func checkRestored(ctx context.Context, b *chain.Backup, disks []exportfetch.Disk) error {
	for _, d := range disks {
		md, _ := b.Disk(d.Name)
		want, err := contentsum.Parse(md.Checksum)
		if err != nil {
			return fmt.Errorf("backup %s, disk %s: the manifest's checksum: %w", b.Name(), d.Name, err)
		}
		got, err := contentsum.File(ctx, d.Path, d.Format, contentsum.Options{})
		if err != nil {
			return fmt.Errorf("reading back %s: %w", d.Path, err)
		}
		if !got.Equal(want) {
			return fmt.Errorf("the restored image of disk %s is not the disk of backup %s (content %s, manifest %s): the chain is damaged, and the image was removed; "+
				"'vbackup verify --from %s' names the damaged backup", d.Name, b.Name(), got, want, filepath.Dir(b.Dir))
		}
	}
	return nil
}

// defineRestored defines a new domain on the restored images.
func defineRestored(ctx context.Context, env *Env, conn virt.Conn, b *chain.Backup, disks []exportfetch.Disk, opts restoreOptions) error {
	images := map[string]xmlgen.RestoredDisk{}
	for _, d := range disks {
		images[d.Name] = xmlgen.RestoredDisk{Path: d.Path, Format: d.Format}
	}
	doc, notes, err := xmlgen.RestoredDomain(b.Domain.XML, opts.Define, images)
	if err != nil {
		return fmt.Errorf("backup %s: %w", b.Name(), err)
	}
	for _, n := range notes {
		fmt.Fprintf(env.Stderr, "note: %s\n", n)
	}
	dom, err := conn.DefineDomain(ctx, doc)
	if err != nil {
		return fmt.Errorf("defining domain %s: %w; the images are in %s", opts.Define, err, opts.To)
	}
	if !opts.Quiet {
		fmt.Fprintf(env.Stderr, "Domain %s defined on the restored images (not started): 'virsh start %s'\n", dom.Name(), dom.Name())
	}
	return nil
}
