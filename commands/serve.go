package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v3"

	"vbackup/engine"
	"vbackup/job"
)

type serveOptions struct {
	From   string
	At     string
	Disks  []string
	Socket string // "" with TCP: a private one when neither is given
	Server job.ServerRequest
	TCP    bool
	TLSDir string
}

// defaultTLSDir is QEMU's (and libvirt's default_tls_x509_cert_dir).
const defaultTLSDir = "/etc/pki/qemu"

func newServeCommand(env *Env, run func(context.Context, *Env, serveOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "export a backup point's disks read-only over NBD, until Ctrl-C",
		Description: "Serves each disk of the point (or those --disk names) as an NBD export named after\n" +
			"the disk, read-only, with its allocation map: nbdcopy, nbdinfo --map, qemu-img and\n" +
			"guestfish read it. The URIs are printed on standard output, one per line (DISK URI).\n" +
			"By default the server listens on a private unix socket; --socket PATH or --tcp\n" +
			"HOST[:PORT] (port 10809 by default) choose. A TCP export beyond loopback needs --tls\n" +
			"(QEMU's x509 folder: ca-cert.pem, server-cert.pem, server-key.pem in --tls-certs DIR,\n" +
			defaultTLSDir + " by default; clients must show a certificate of that CA), or --insecure.\n" +
			"Ctrl-C stops the server (exit status 130); the backup folder is locked for reading,\n" +
			"so prune waits, and is never written.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the backup folder `DIR`", Required: true},
			&cli.StringFlag{Name: "at", Usage: "the backup to serve: its `CHECKPOINT` name, or latest", Value: "latest"},
			&cli.StringSliceFlag{Name: "disk", Usage: "serve only disk `NAME` (repeatable)"},
			&cli.StringFlag{Name: "socket", Usage: "listen on the unix socket `PATH`"},
			&cli.StringFlag{Name: "tcp", Usage: "listen on TCP `HOST[:PORT]`"},
			&cli.BoolFlag{Name: "tls", Usage: "with --tcp: NBD over TLS"},
			&cli.StringFlag{Name: "tls-certs", Usage: "the server's x509 folder `DIR`", Value: defaultTLSDir},
			&cli.BoolFlag{Name: "insecure", Usage: "allow an unencrypted TCP export beyond loopback"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			globals(env, cmd)
			if _, err := args(cmd); err != nil {
				return err
			}
			if err := exclusive(cmd, "socket", "tcp"); err != nil {
				return err
			}
			if err := requires(cmd, "tls", "tcp"); err != nil {
				return err
			}
			if err := requires(cmd, "tls-certs", "tls"); err != nil {
				return err
			}
			if err := requires(cmd, "insecure", "tcp"); err != nil {
				return err
			}
			opts := serveOptions{From: cmd.String("from"), At: cmd.String("at"), Disks: cmd.StringSlice("disk"), Socket: cmd.String("socket")}
			if opts.Socket != "" {
				abs, err := filepath.Abs(opts.Socket)
				if err != nil {
					return err
				}
				opts.Socket = abs
			}
			if cmd.IsSet("tcp") {
				var err error
				if opts.Server, err = job.ParseServer("tcp:"+cmd.String("tcp"), cmd.Bool("tls")); err != nil {
					return usageErrorf(cmd, "--tcp %q: %v", cmd.String("tcp"), err)
				}
				if opts.Server.PickPort {
					opts.Server.Spec.Port, opts.Server.PickPort = 10809, false
				}
				opts.Server.Insecure = cmd.Bool("insecure")
				if err := opts.Server.CheckExposure("--tcp " + cmd.String("tcp")); err != nil {
					return usageErrorf(cmd, "%v", err)
				}
				opts.TCP = true
				if cmd.Bool("tls") {
					abs, err := filepath.Abs(cmd.String("tls-certs"))
					if err != nil {
						return err
					}
					opts.TLSDir = abs
				}
			}
			return run(ctx, env, opts)
		},
	}
}

func runServe(ctx context.Context, env *Env, opts serveOptions) error {
	if opts.TLSDir != "" {
		for _, f := range []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"} {
			if _, err := os.Stat(filepath.Join(opts.TLSDir, f)); err != nil {
				return fmt.Errorf("--tls: %s has no %s (it needs ca-cert.pem, server-cert.pem and server-key.pem, as QEMU names them); give the folder with --tls-certs", opts.TLSDir, f)
			}
		}
	}
	req := engine.ServeRequest{From: opts.From, At: opts.At, Disks: opts.Disks, Socket: opts.Socket, TLSDir: opts.TLSDir}
	if opts.TCP {
		req.Host, req.Port = opts.Server.Spec.Host, opts.Server.Spec.Port
	} else if req.Socket == "" {
		dir, err := os.MkdirTemp("", "vbackup-serve-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		req.Socket = filepath.Join(dir, "nbd.sock")
	}
	ctx, intr := interruptible(ctx, env, interruptText{ending: "stopping the NBD server"})
	defer intr.stop()
	s, err := engine.Serve(ctx, req)
	if err != nil {
		return intr.wrap(err)
	}
	for _, d := range s.Disks {
		fmt.Fprintf(env.Stdout, "%s %s\n", d, s.URIs[d])
	}
	fmt.Fprintf(env.Stderr, "Serving backup %s read-only over NBD; Ctrl-C stops.\n", s.Backup.Name())
	err = s.Wait(ctx, req.Socket)
	if errors.Is(err, ErrInterrupted) {
		fmt.Fprintln(env.Stderr, "Stopped serving.")
	}
	return intr.wrap(err)
}
