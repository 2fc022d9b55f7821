package job

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	exportfetch "vbackup/fetch"
	"vbackup/nbd"
	"vbackup/progress"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// FetchRequest says how to read a pull job's exports into files.
type FetchRequest struct {
	Dir         string   // the files go here, one per disk named after it
	Disks       []string // only these; all when empty
	Format      string   // of a full export's file: raw or qcow2
	Backing     string   // folder of the previous backup, for incremental overlays
	Connections int      // NBD connections per disk
	TLSCerts    string   // client certificates of a TLS export; "" to look in CertDirs
	CertDirs    []string // the folders searched for client certificates
	Sockets     Sockets  // how the job's socket is reached from here (remote.go)
	Printer     progress.Printer
	Notes       progress.Notifier
	Now         func() time.Time
	Limit       *nbd.Limiter // caps the rate of the data read; nil: no cap
}

// Bitmap is the meta context listing a pull disk's changed blocks, "" for
// a full export.
func (d Disk) Bitmap() string {
	if d.ExportBitmap == "" {
		return ""
	}
	return "qemu:dirty-bitmap:" + d.ExportBitmap
}

// Fetch reads the exports of a running pull job into req.Dir. A failed
// fetch keeps no incomplete file.
func Fetch(ctx context.Context, j *Job, domain string, req FetchRequest) (exportfetch.Result, error) {
	if req.Notes == nil {
		req.Notes = progress.NewNotifier(nil, nil)
	}
	if err := virt.CheckDiskNames(fmt.Sprintf("the pull job of domain %q", domain), j.DiskNames(), req.Disks); err != nil {
		return exportfetch.Result{}, err
	}
	certs, err := tlsCerts(domain, j.Server, req)
	if err != nil {
		return exportfetch.Result{}, err
	}
	srv, done, err := req.Sockets.Reach(ctx, j.Server)
	if err != nil {
		return exportfetch.Result{}, fmt.Errorf("domain %q: %w", domain, err)
	}
	defer done()
	var disks []exportfetch.Disk
	var probe string // the export that tells whether TLS works
	for _, d := range j.Disks {
		if !virt.Wanted(req.Disks, d.Name) {
			continue
		}
		if probe == "" {
			probe = d.ExportName
		}
		fd := exportfetch.Disk{Name: d.Name, URI: exportURI(srv, d.ExportName, certs), Format: req.Format, Bitmap: d.Bitmap()}
		if fd.Bitmap != "" {
			// Only a qcow2 can hold just the changed extents over a backing file.
			fd.Format = "qcow2"
			if req.Format == "raw" {
				return exportfetch.Result{}, fmt.Errorf("disk %s: an incremental export holds only the changes, which a raw file cannot keep apart; use --format qcow2 (and --backing DIR)", d.Name)
			}
			if req.Backing != "" {
				backing, err := filepath.Abs(filepath.Join(req.Backing, d.Name+".qcow2"))
				if err != nil {
					return exportfetch.Result{}, err
				}
				fd.Backing = backing
				if _, err := os.Stat(fd.Backing); err != nil {
					return exportfetch.Result{}, fmt.Errorf("disk %s: --backing %s: no %s there to build on", d.Name, req.Backing, filepath.Base(fd.Backing))
				}
			}
		} else if req.Backing != "" {
			return exportfetch.Result{}, fmt.Errorf("disk %s: --backing is for incremental exports; this one is full", d.Name)
		}
		fd.Path = filepath.Join(req.Dir, d.Name+"."+fd.Format)
		disks = append(disks, fd)
	}
	if j.Server.TLS && probe != "" {
		// Before anything is written: a certificate problem is then told
		// once, with what to do, and leaves no folder or file behind.
		if err := checkTLS(ctx, domain, srv, probe, certs); err != nil {
			return exportfetch.Result{}, err
		}
	}
	if err := os.MkdirAll(req.Dir, 0o755); err != nil {
		return exportfetch.Result{}, err
	}
	res, err := exportfetch.Run(ctx, disks, exportfetch.Options{Connections: req.Connections, Printer: req.Printer, Notes: req.Notes, Now: req.Now, Limit: req.Limit})
	if err != nil {
		return res, fmt.Errorf("domain %q: fetching the exports: %w; nothing incomplete was kept", domain, err)
	}
	return res, nil
}

// DefaultCertDirs are the folders holding client certificates when none is
// given: libnbd's defaults first (where nbdinfo and nbdcopy look, with the
// same file names), then, for root on libvirt's own host, libvirt's folder
// for backup TLS and the default it falls back to, which also serve as
// QEMU's client folders (migration).
func DefaultCertDirs(home string) []string {
	if os.Geteuid() != 0 {
		if home == "" {
			return nil
		}
		return []string{filepath.Join(home, ".pki", "libnbd"), filepath.Join(home, ".config", "pki", "libnbd")}
	}
	return []string{"/etc/pki/libnbd", "/etc/pki/libvirt-backup", "/etc/pki/qemu"}
}

// tlsCerts settles the client certificate folder for the job's server: ""
// when it does not use TLS.
func tlsCerts(domain string, srv xmlgen.Server, req FetchRequest) (string, error) {
	if !srv.TLS {
		if req.TLSCerts != "" {
			// Not an error: the same command line can then fetch any job.
			req.Notes.Notef("note: the pull job of domain %s serves its exports without TLS; --tls-certs is not used", domain)
		}
		return "", nil
	}
	if dir := req.TLSCerts; dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return "", fmt.Errorf("--tls-certs %s: no such folder; give the folder holding ca-cert.pem, client-cert.pem and client-key.pem", dir)
		}
		if _, err := os.Stat(filepath.Join(dir, "ca-cert.pem")); err != nil {
			return "", fmt.Errorf("--tls-certs %s: no ca-cert.pem there; copy in the ca-cert.pem of libvirt's backup_tls_x509_cert_dir (qemu.conf), the CA that signed the server's certificate", dir)
		}
		return filepath.Abs(dir)
	}
	for _, dir := range req.CertDirs {
		if _, err := os.Stat(filepath.Join(dir, "ca-cert.pem")); err == nil {
			return dir, nil
		}
	}
	looked := ""
	if len(req.CertDirs) > 0 {
		looked = " (none of " + strings.Join(req.CertDirs, ", ") + " holds a ca-cert.pem)"
	}
	return "", fmt.Errorf("domain %q: the pull job serves its exports over TLS, and no client certificates were found%s; "+
		"pass --tls-certs DIR, a folder with ca-cert.pem (the CA of libvirt's backup_tls_x509_cert_dir), client-cert.pem and client-key.pem", domain, looked)
}

// exportURI is NBDURI with the client certificates of a TLS export.
func exportURI(srv xmlgen.Server, export, certs string) string {
	uri := NBDURI(srv, export)
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
	where := fmt.Sprintf("domain %q: export %q at %s", domain, export, NBDURI(srv, export))
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
