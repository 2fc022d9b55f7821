package nbd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Target is where an NBD URI points: the socket to dial, the export's
// name, and how to use TLS. ParseURI makes one from a URI and String
// writes it back as one.
type Target struct {
	Network string // "tcp" or "unix"
	Address string // host:port, or the Unix socket's path
	Export  string

	TLS bool // the URI was nbds:// or nbds+unix://: TLS is required
	// From the query: tls-hostname, tls-certificates (a directory holding
	// ca-cert.pem and optionally client-cert.pem + client-key.pem, as
	// QEMU and libnbd use), and tls-verify-peer=false.
	TLSHostname     string
	TLSCertificates string
	TLSNoVerify     bool
}

// ParseURI parses an NBD URI as the NBD project's doc/uri.md describes
// it: nbd://host[:port]/export, nbds://..., nbd+unix:///export?socket=PATH
// and nbds+unix://. The export is the path without its leading slash,
// unescaped; the port defaults to 10809. Unknown query parameters are
// errors, except the experimental x-* ones, which are ignored.
func ParseURI(s string) (Target, error) {
	var t Target
	u, err := url.Parse(s)
	if err != nil {
		return t, fmt.Errorf("nbd: bad URI %q: %w", s, err)
	}
	bad := func(format string, args ...any) (Target, error) {
		return Target{}, fmt.Errorf("nbd: bad URI %q: "+format, append([]any{s}, args...)...)
	}
	switch u.Scheme {
	case "nbd", "nbds":
		t.Network = "tcp"
	case "nbd+unix", "nbds+unix":
		t.Network = "unix"
	case "":
		return bad("no scheme (want nbd://, nbds://, nbd+unix:// or nbds+unix://)")
	default:
		return bad("scheme %q is not an NBD scheme (want nbd, nbds, nbd+unix or nbds+unix)", u.Scheme)
	}
	t.TLS = strings.HasPrefix(u.Scheme, "nbds")
	if u.Opaque != "" {
		return bad("want %s://...", u.Scheme)
	}
	t.Export = strings.TrimPrefix(u.Path, "/")
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("%v", err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return bad("query parameter %q given %d times", k, len(v))
		}
		val := v[0]
		switch k {
		case "socket":
			if t.Network != "unix" {
				return bad("socket= is only for nbd+unix:// and nbds+unix://")
			}
			t.Address = val
		case "tls-hostname":
			t.TLSHostname = val
		case "tls-certificates":
			t.TLSCertificates = val
		case "tls-verify-peer":
			switch val {
			case "0", "false":
				t.TLSNoVerify = true
			case "1", "true":
			default:
				return bad("tls-verify-peer=%q: want 0 or 1", val)
			}
		case "tls-type":
			if val != "x509" {
				return bad("tls-type=%s: only x509 is supported", val)
			}
		default:
			if !strings.HasPrefix(k, "x-") {
				return bad("unknown query parameter %q", k)
			}
		}
	}
	if t.Network == "unix" {
		if t.Address == "" {
			return bad("%s:// needs ?socket=PATH", u.Scheme)
		}
		if u.Host != "" {
			return bad("%s:// takes no host (%q); the socket is given by ?socket=", u.Scheme, u.Host)
		}
		return t, nil
	}
	if u.Hostname() == "" {
		return bad("no host")
	}
	port := u.Port()
	if port == "" {
		port = defaultPort
	}
	t.Address = net.JoinHostPort(u.Hostname(), port)
	return t, nil
}

// String writes t as an NBD URI that ParseURI reads back.
func (t Target) String() string {
	u := url.URL{Scheme: "nbd", Path: "/" + t.Export}
	if t.TLS {
		u.Scheme = "nbds"
	}
	q := url.Values{}
	if t.Network == "unix" {
		u.Scheme += "+unix"
		q.Set("socket", t.Address)
	} else {
		u.Host = t.Address
		if host, port, err := net.SplitHostPort(t.Address); err == nil && port == defaultPort {
			u.Host = host
			if strings.Contains(host, ":") {
				u.Host = "[" + host + "]"
			}
		}
	}
	if t.TLSHostname != "" {
		q.Set("tls-hostname", t.TLSHostname)
	}
	if t.TLSCertificates != "" {
		q.Set("tls-certificates", t.TLSCertificates)
	}
	if t.TLSNoVerify {
		q.Set("tls-verify-peer", "0")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// tlsConfig is the TLS configuration for t: base (from Options, may be nil)
// with what the URI says applied over it. It returns nil when t does not
// use TLS.
func (t Target) tlsConfig(base *tls.Config) (*tls.Config, error) {
	if !t.TLS && base == nil {
		return nil, nil
	}
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if t.TLSCertificates != "" {
		dir := t.TLSCertificates
		pem, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("nbd: tls-certificates: %w", err)
		}
		if err == nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("nbd: tls-certificates: no certificate in %s", filepath.Join(dir, "ca-cert.pem"))
			}
			cfg.RootCAs = pool
		}
		certFile, keyFile := filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem")
		if _, err := os.Stat(certFile); err == nil {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("nbd: tls-certificates: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
	}
	if t.TLSNoVerify {
		cfg.InsecureSkipVerify = true
	}
	switch {
	case t.TLSHostname != "":
		cfg.ServerName = t.TLSHostname
	case cfg.ServerName != "":
	case t.Network == "tcp":
		host, _, _ := net.SplitHostPort(t.Address)
		cfg.ServerName = host
	default:
		// A Unix socket names no host; QEMU's and libnbd's servers are
		// usually given a certificate for the machine itself.
		cfg.ServerName = "localhost"
	}
	return cfg, nil
}
