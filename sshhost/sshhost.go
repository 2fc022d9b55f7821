// Package sshhost reaches the host of a libvirt connection over SSH the way
// libvirt's own ssh transport does: by running the ssh binary with what the
// URI says (user, port, keyfile=, no_verify=, no_tty=, command=), so that
// the admin's ~/.ssh/config, ProxyJump, agent and known_hosts all apply.
// Through it vbackup runs small shell scripts on the hypervisor (a pull
// job's socket folder, qemu-img and qemu-nbd on a shut-off domain's
// images) and forwards a unix socket there to one here (the NBD exports):
// no port is opened on the hypervisor.
package sshhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// Host is the hypervisor of a libvirt connection over SSH.
type Host struct {
	Binary string   // the ssh command (the URI's command=, else "ssh")
	Opts   []string // its options before the host name
	Name   string   // the host name, as the URI gives it
	User   string   // "" for ssh's own default
	Port   string
	URI    string // the connection URI, for messages

	mu    sync.Mutex
	early map[string]*early // forwards Prepare started, by remote socket
}

// FromURI reads the SSH access of a libvirt connection URI; ok is false
// for a URI that does not go through SSH (local, tls, tcp, ...).
func FromURI(uri string) (h *Host, ok bool, err error) {
	u, err := url.Parse(uri)
	if err != nil || u.Host == "" {
		return nil, false, nil
	}
	_, transport, _ := strings.Cut(u.Scheme, "+")
	switch transport {
	case "ssh", "libssh", "libssh2":
	default:
		return nil, false, nil
	}
	q := u.Query()
	h = &Host{Binary: "ssh", Name: u.Hostname(), Port: u.Port(), URI: redact(u)}
	if u.User != nil {
		h.User = u.User.Username()
	}
	if c := q.Get("command"); c != "" && transport == "ssh" {
		h.Binary = c
	}
	if h.Port != "" {
		h.Opts = append(h.Opts, "-p", h.Port)
	}
	if h.User != "" {
		h.Opts = append(h.Opts, "-l", h.User)
	}
	if k := q.Get("keyfile"); k != "" {
		if _, err := os.Stat(k); err != nil {
			return nil, true, fmt.Errorf("the connection URI's keyfile=%s: %w; name the private key the backup server logs in to %s with", k, errors.Unwrap(err), h.Name)
		}
		h.Opts = append(h.Opts, "-i", k)
	}
	// libvirt's libssh transports read known_hosts= themselves; for the
	// ssh binary it is UserKnownHostsFile.
	if kh := q.Get("known_hosts"); kh != "" && transport != "ssh" {
		h.Opts = append(h.Opts, "-o", "UserKnownHostsFile="+kh)
	}
	if q.Get("no_tty") == "1" {
		h.Opts = append(h.Opts, "-o", "BatchMode=yes")
	}
	if q.Get("no_verify") == "1" || q.Get("known_hosts_verify") == "ignore" {
		h.Opts = append(h.Opts, "-o", "StrictHostKeyChecking=no")
	}
	return h, true, nil
}

// redact is the URI without its query, for messages.
func redact(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	return c.String()
}

// Where is user@host (or host), as a user would type it to ssh.
func (h *Host) Where() string {
	where := h.Name
	if h.User != "" {
		where = h.User + "@" + where
	}
	if h.Port != "" {
		where += " (port " + h.Port + ")"
	}
	return where
}

// command is ssh with the host's options, extra ones, the host and the
// remote command line.
func (h *Host) command(ctx context.Context, extra []string, remote string) *exec.Cmd {
	args := append(append([]string{}, h.Opts...), "-T", "-e", "none")
	args = append(args, extra...)
	args = append(args, "--", h.Name)
	if remote != "" {
		args = append(args, remote)
	}
	return exec.CommandContext(ctx, h.Binary, args...)
}

// Run runs script with sh on the host, its arguments quoted, and returns
// what it printed. An SSH failure comes back as a *RefusedError.
func (h *Host) Run(ctx context.Context, script string, args ...string) (string, error) {
	cmd := h.command(ctx, nil, shLine(script, args))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", context.Cause(ctx)
		}
		var exit *exec.ExitError
		// ssh exits 255 for its own failures; anything else is the script's.
		if errors.As(err, &exit) && exit.ExitCode() != 255 {
			return stdout.String(), fmt.Errorf("on %s: %s", h.Name, lastLine(stderr.String(), err.Error()))
		}
		return "", h.refused(stderr.String(), err)
	}
	return stdout.String(), nil
}

// shLine is the remote command line that runs script with sh, args its
// positional parameters: every word quoted, whatever the login shell.
func shLine(script string, args []string) string {
	line := "sh -c " + Quote(script) + " vbackup"
	for _, a := range args {
		line += " " + Quote(a)
	}
	return line
}

// Check logs in and runs nothing: it tells whether SSH lets vbackup in.
func (h *Host) Check(ctx context.Context) error {
	_, err := h.Run(ctx, "true")
	return err
}

// Quote makes s one word for a POSIX shell.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func lastLine(s, fallback string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return fallback
	}
	lines := strings.Split(s, "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
