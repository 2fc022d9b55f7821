package commands

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v3"

	"vbackup/job"
	"vbackup/progress"
	"vbackup/virt"
)

type backupFetchOptions struct {
	Domain      string
	Dir         string
	Disks       []string // only these; all when empty
	Format      string   // for full exports: raw or qcow2
	Backing     string   // folder of the previous backup, for incremental overlays
	Connections int
	TLSCerts    string // client certificates for a TLS export; "" for the usual folders
	BWLimit     int64  // bytes per second read, for every disk together; 0: no cap
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
			"with backup-end (so a failed fetch can be retried).\n\n" +
			"A job started with --tls is read over TLS with the client certificates of\n" +
			"--tls-certs DIR: ca-cert.pem (the CA of qemu.conf's backup_tls_x509_cert_dir),\n" +
			"client-cert.pem and client-key.pem, as QEMU and libnbd name them. Without it, the\n" +
			"first folder holding a ca-cert.pem: as root /etc/pki/libnbd, /etc/pki/libvirt-backup,\n" +
			"/etc/pki/qemu; otherwise ~/.pki/libnbd, ~/.config/pki/libnbd.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "write the files into `DIR` (created if missing)", Required: true},
			&cli.StringSliceFlag{Name: "disk", Usage: "fetch only disk `NAME` (repeatable)"},
			&cli.StringFlag{Name: "format", Usage: "`FORMAT` of a full export's file: qcow2 or raw", Value: "qcow2"},
			&cli.StringFlag{Name: "backing", Usage: "incremental: back each file by the same disk's file in `DIR`"},
			&cli.IntFlag{Name: "connections", Usage: "NBD connections per disk, `N` (if the server allows several)", Value: 4},
			&cli.StringFlag{Name: "tls-certs", Usage: "TLS exports: the client certificates in `DIR` (ca-cert.pem, client-cert.pem, client-key.pem)"},
			&cli.BoolFlag{Name: "json", Usage: "print progress as JSON lines on stdout"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
			bwlimitFlag("read from the exports"),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			a, err := args(cmd, "DOMAIN")
			if err != nil {
				return err
			}
			opts := backupFetchOptions{Domain: a[0], Dir: cmd.String("to"), Disks: cmd.StringSlice("disk"), Format: cmd.String("format"),
				Backing: cmd.String("backing"), Connections: int(cmd.Int("connections")), TLSCerts: cmd.String("tls-certs"),
				JSON: cmd.Bool("json"), Quiet: cmd.Bool("quiet")}
			if err := fetchFlagRules(cmd, opts.Format, opts.Connections); err != nil {
				return err
			}
			if opts.BWLimit, err = bwlimitOption(cmd); err != nil {
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
	if cmd.IsSet("tls-certs") && cmd.String("tls-certs") == "" {
		return usageErrorf(cmd, "--tls-certs needs a folder")
	}
	return nil
}

func runBackupFetch(ctx context.Context, env *Env, opts backupFetchOptions) error {
	_, dom, err := openDomain(ctx, env, opts.Domain)
	if err != nil {
		return err
	}
	j, ok, err := job.Current(ctx, dom)
	if err != nil {
		return err
	}
	if !ok || !j.Pull {
		return fmt.Errorf("domain %q has no pull backup job running; start one with 'vbackup backup-begin %s --pull' (or use --fetch DIR there)", dom.Name(), dom.Name())
	}
	ctx, intr := interruptible(ctx, env, interruptText{ending: "stopping the fetch; no incomplete file is kept"})
	defer intr.stop()
	if err := fetchInto(ctx, env, newOutput(env, opts.JSON, opts.Quiet), dom, j, opts); err != nil {
		return intr.wrap(fmt.Errorf("%w; the job still runs: retry, or end it with 'vbackup backup-end %s --discard-checkpoint'", err, dom.Name()))
	}
	return nil
}

// fetchInto reads the exports of a running pull job into opts.Dir and says
// where each disk went.
func fetchInto(ctx context.Context, env *Env, out output, dom virt.Domain, j *job.Job, opts backupFetchOptions) error {
	socks, err := sockets(ctx, env)
	if err != nil {
		return err
	}
	certDirs := job.DefaultCertDirs(env.Getenv("HOME"))
	if env.CertDirs != nil {
		certDirs = env.CertDirs()
	}
	res, err := job.Fetch(ctx, j, dom.Name(), job.FetchRequest{Dir: opts.Dir, Disks: opts.Disks, Format: opts.Format, Backing: opts.Backing,
		Connections: opts.Connections, TLSCerts: opts.TLSCerts, CertDirs: certDirs, Printer: out.printer, Notes: out.notes, Now: env.Now, Sockets: socks,
		Limit: newLimiter(out.notes, opts.BWLimit)})
	if err != nil {
		return err
	}
	for _, d := range res.Disks {
		zeroed := ""
		if d.Zeroed > 0 {
			zeroed = ", " + progress.Capacity(d.Zeroed) + " zeroed"
		}
		out.notes.Infof("  %-6s -> %s (%s copied%s, of %s)", d.Name, d.Path, progress.Capacity(d.Copied), zeroed, progress.Capacity(d.Size))
	}
	return nil
}
