package commands

import (
	"context"
	"encoding/json"

	"github.com/urfave/cli/v3"

	"vbackup/engine"
	"vbackup/progress"
)

const instantHelp = "--instant --define NAME [--start] writes no copy: each disk becomes a thin qcow2\n" +
	"overlay OUTDIR/DISK.qcow2 backed by the backup's image (absolute path), so the new\n" +
	"domain runs within seconds whatever its size; its writes go to OUTDIR, DIR is only\n" +
	"read. QEMU's user (OUTDIR's owner) is given read access to exactly those images by\n" +
	"POSIX ACL entries; their contents and owners are not changed. DIR records that the\n" +
	"domain reads that point: prune keeps it, and 'vbackup backups DIR' shows it in use.\n" +
	"--finish NAME then copies the backup's data into the overlays while the domain runs\n" +
	"(a block pull per disk), after which it reads nothing from DIR; the record and the\n" +
	"ACL entries go. Ctrl-C stops the copy and leaves the domain running on its\n" +
	"overlays; --finish again goes on. With --from DIR, --finish of a domain that is gone\n" +
	"releases its record."

func instantFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "instant", Usage: "run the new domain straight from the backup: thin overlays in OUTDIR (needs --define)"},
		&cli.BoolFlag{Name: "start", Usage: "start the domain --define defines"},
		&cli.StringFlag{Name: "finish", Usage: "copy the backup's data into instant-restored domain `NAME`'s overlays while it runs"},
	}
}

// restoreModes checks the flags of restore's three modes: a copy, an
// instant restore, the finish of one.
func restoreModes(cmd *cli.Command, opts restoreOptions) error {
	if opts.Finish != "" {
		for _, n := range []string{"to", "at", "disk", "define", "instant", "start", "format"} {
			if cmd.IsSet(n) {
				return usageErrorf(cmd, "--finish %s works on the domain as it runs: --%s does not go with it", opts.Finish, n)
			}
		}
		return nil
	}
	if !cmd.IsSet("from") {
		return usageErrorf(cmd, "--from is required (or --finish NAME, to finish an instant restore)")
	}
	// Disks written onto their targets need no OUTDIR.
	if !cmd.IsSet("to") && opts.Pool == "" && (len(opts.Targets) == 0 || len(opts.Targets) < len(opts.Disks)) {
		return usageErrorf(cmd, "--to is required (or --finish NAME, to finish an instant restore)")
	}
	if opts.Instant && len(opts.Targets) > 0 {
		return usageErrorf(cmd, "--instant runs the domain on overlays in OUTDIR: --disk NAME=TARGET does not go with it")
	}
	if opts.Instant && opts.Define == "" {
		return usageErrorf(cmd, "--instant runs a new domain on the backup: name it with --define NAME")
	}
	if opts.Instant && cmd.IsSet("format") && opts.Format != "qcow2" {
		return usageErrorf(cmd, "--instant makes qcow2 overlays: --format %s does not go with it", opts.Format)
	}
	if opts.Start && opts.Define == "" {
		return usageErrorf(cmd, "--start starts the domain --define NAME defines: give --define")
	}
	return nil
}

// instantJSON is what --json prints of an instant restore.
type instantJSON struct {
	Domain   string            `json:"domain"`
	Started  bool              `json:"started"`
	Backup   string            `json:"backup"`
	QEMUUser string            `json:"qemu_user"`
	Disks    []instantDiskJSON `json:"disks"`
	Grants   []string          `json:"acl_granted,omitempty"`
}

type instantDiskJSON struct {
	Name    string `json:"name"`
	Overlay string `json:"overlay"`
	Backing string `json:"backing"`
	Size    uint64 `json:"virtual_size"`
}

func runRestoreInstant(ctx context.Context, env *Env, opts restoreOptions) error {
	conn, err := env.Conn(ctx)
	if err != nil {
		return err
	}
	out := newOutput(env, opts.JSON, opts.Quiet)
	req := engine.InstantRequest{From: opts.From, At: opts.At, To: opts.To, Disks: opts.Disks, Define: opts.Define, Start: opts.Start, Conn: conn, Now: env.Now}
	res, err := engine.InstantRestore(ctx, req, out.notes)
	if err != nil {
		return err
	}
	if opts.JSON {
		j := instantJSON{Domain: res.Domain, Started: res.Started, Backup: res.Backup.Name(), QEMUUser: res.QEMUUser}
		for _, d := range res.Disks {
			j.Disks = append(j.Disks, instantDiskJSON{d.Name, d.Overlay, d.Backing, d.Size})
		}
		for _, g := range res.Grants {
			j.Grants = append(j.Grants, g.Path)
		}
		return json.NewEncoder(env.Stdout).Encode(j)
	}
	b := res.Backup
	out.notes.Infof("Instant restore of backup %s (%s, %s) from %s:", b.Name(), b.Time.Local().Format("2006-01-02 15:04:05"), b.Level, opts.From)
	for _, d := range res.Disks {
		out.notes.Infof("  %-6s -> %s (%s, thin overlay on %s)", d.Name, d.Overlay, progress.Capacity(d.Size), d.Backing)
	}
	if n := len(res.Grants); n > 0 {
		out.notes.Notef("note: gave QEMU's user %s read access to %d files and folders of %s (POSIX ACL entries, as getfacl lists them; contents and owners unchanged); --finish takes them back",
			res.QEMUUser, n, opts.From)
	}
	state := "defined (not started: 'virsh start " + res.Domain + "')"
	if res.Started {
		state = "defined and started"
	}
	out.notes.Infof("Domain %s %s on the overlays; its writes go to %s, and %s is only read.", res.Domain, state, opts.To, opts.From)
	out.notes.Infof("%s keeps backup %s for it until 'vbackup restore --finish %s' has copied the data into the overlays.", opts.From, b.Name(), res.Domain)
	return nil
}

// startRestored starts a domain a full restore defined, for --start.
func startRestored(ctx context.Context, env *Env, opts restoreOptions, name string, out output) error {
	if !opts.Start || name == "" {
		return nil
	}
	conn, err := env.Conn(ctx)
	if err != nil {
		return err
	}
	dom, err := conn.Domain(ctx, name)
	if err != nil {
		return err
	}
	if err := dom.Boot(ctx); err != nil {
		return err
	}
	out.notes.Infof("Domain %s defined on the restored images and started.", name)
	return nil
}
