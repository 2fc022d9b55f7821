package commands

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v3"

	exportfetch "vbackup/fetch"
	"vbackup/nbd"
	"vbackup/virt"
	"vbackup/xmlgen"
)

type backupFetchOptions struct {
	Domain      string
	Dir         string
	Disks       []string // only these; all when empty
	Format      string   // for full exports: raw or qcow2
	Backing     string   // folder of the previous backup, for incremental overlays
	Connections int
	TLSCerts    string // client certificates for a TLS export; "" for the usual folders
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
	certs, err := fetchTLS(env, dom.Name(), srv, opts)
	if err != nil {
		return err
	}
	var disks []exportfetch.Disk
	var probe string // the export that tells whether TLS works
	for _, d := range all {
		if len(opts.Disks) > 0 && !slices.Contains(opts.Disks, d.Name) {
			continue
		}
		if probe == "" {
			probe = d.ExportName
		}
		fd := exportfetch.Disk{Name: d.Name, URI: exportURI(srv, d.ExportName, certs), Format: opts.Format}
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
	if srv.TLS && probe != "" {
		// Before anything is written: a certificate problem is then told
		// once, with what to do, and leaves no folder or file behind.
		if err := checkTLS(ctx, dom.Name(), srv, probe, certs); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return err
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

// tlsCertDirs are the folders holding client certificates when none is
// given: libnbd's defaults first (where nbdinfo and nbdcopy look, with the
// same file names), then, for root on libvirt's own host, libvirt's folder
// for backup TLS and the default it falls back to, which also serve as
// QEMU's client folders (migration).
func tlsCertDirs(env *Env) []string {
	if env.CertDirs != nil {
		return env.CertDirs()
	}
	if os.Geteuid() != 0 {
		home := env.Getenv("HOME")
		if home == "" {
			return nil
		}
		return []string{filepath.Join(home, ".pki", "libnbd"), filepath.Join(home, ".config", "pki", "libnbd")}
	}
	return []string{"/etc/pki/libnbd", "/etc/pki/libvirt-backup", "/etc/pki/qemu"}
}

// fetchTLS settles the client certificate folder for the job's server: ""
// when it does not use TLS.
func fetchTLS(env *Env, domain string, srv xmlgen.Server, opts backupFetchOptions) (string, error) {
	if !srv.TLS {
		if opts.TLSCerts != "" && !opts.Quiet {
			// Not an error: the same command line can then fetch any job.
			fmt.Fprintf(env.Stderr, "note: the pull job of domain %s serves its exports without TLS; --tls-certs is not used\n", domain)
		}
		return "", nil
	}
	if dir := opts.TLSCerts; dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return "", fmt.Errorf("--tls-certs %s: no such folder; give the folder holding ca-cert.pem, client-cert.pem and client-key.pem", dir)
		}
		if _, err := os.Stat(filepath.Join(dir, "ca-cert.pem")); err != nil {
			return "", fmt.Errorf("--tls-certs %s: no ca-cert.pem there; copy in the ca-cert.pem of libvirt's backup_tls_x509_cert_dir (qemu.conf), the CA that signed the server's certificate", dir)
		}
		return filepath.Abs(dir)
	}
	dirs := tlsCertDirs(env)
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "ca-cert.pem")); err == nil {
			return dir, nil
		}
	}
	looked := ""
	if len(dirs) > 0 {
		looked = " (none of " + strings.Join(dirs, ", ") + " holds a ca-cert.pem)"
	}
	return "", fmt.Errorf("domain %q: the pull job serves its exports over TLS, and no client certificates were found%s; "+
		"pass --tls-certs DIR, a folder with ca-cert.pem (the CA of libvirt's backup_tls_x509_cert_dir), client-cert.pem and client-key.pem", domain, looked)
}

// exportURI is nbdURI with the client certificates of a TLS export.
func exportURI(srv xmlgen.Server, export, certs string) string {
	uri := nbdURI(srv, export)
	if certs == "" {
		return uri
	}
	t, err := nbd.ParseURI(uri)
	if err != nil {
		return uri // Dial reports it
	}
	t.TLSCertificates = certs
	return t.String()
}

// checkTLS opens and ends one session with an export of the job's TLS
// server; a certificate problem comes back saying what to do about it.
func checkTLS(ctx context.Context, domain string, srv xmlgen.Server, export, certs string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// A whole connection, not nbd.Info: over TLS its hang-up after
	// NBD_OPT_ABORT can race QEMU's and fail with a broken pipe.
	c, err := nbd.Dial(ctx, exportURI(srv, export, certs), nbd.Options{})
	if err == nil {
		c.Close()
		return nil
	}
	where := fmt.Sprintf("domain %q: export %q at %s", domain, export, nbdURI(srv, export))
	if advice := tlsProblem(err, srv, certs); advice != "" {
		return fmt.Errorf("%s: TLS failed: %s (%w)", where, advice, err)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// tlsProblem says in the user's terms why a TLS session failed, and what to
// change; "" when err is not about certificates.
func tlsProblem(err error, srv xmlgen.Server, certs string) string {
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var remote *net.OpError
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("the server's certificate is not signed by the CA in %s; use the ca-cert.pem of libvirt's backup_tls_x509_cert_dir (qemu.conf) there",
			filepath.Join(certs, "ca-cert.pem"))
	case errors.As(err, &badHost):
		host := srv.Host
		if srv.Socket != "" {
			host = "localhost"
		}
		return fmt.Sprintf("the server's certificate is not made out to %s; reissue it with that name (subjectAltName), or start the job on a --server address it names", host)
	case errors.As(err, &remote) && remote.Op == "remote error",
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		// QEMU hangs up, right after the handshake, on a client whose
		// certificate it does not accept.
		if _, err := os.Stat(filepath.Join(certs, "client-cert.pem")); err != nil {
			return fmt.Sprintf("the server hung up: it requires a client certificate (libvirt's backup_tls_x509_verify, on by default), and %s has no client-cert.pem and client-key.pem", certs)
		}
		return fmt.Sprintf("the server hung up: it did not accept the client certificate %s; it must be signed by the CA of libvirt's backup_tls_x509_cert_dir",
			filepath.Join(certs, "client-cert.pem"))
	}
	return ""
}
