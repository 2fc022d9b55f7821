package nbd

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// certDir makes a CA, a server certificate for localhost and 127.0.0.1 and
// a client certificate, in the layout nbdkit, QEMU and the tls-certificates
// URI parameter use (ca-cert.pem, server-cert.pem, server-key.pem,
// client-cert.pem, client-key.pem), and returns the directory and a pool
// holding the CA.
func certDir(t *testing.T) (string, *x509.CertPool) {
	dir := t.TempDir()
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vbackup test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) (certDER, keyDER []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			DNSNames:     []string{name},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		certDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ = x509.MarshalPKCS8PrivateKey(key)
		return certDER, keyDER
	}
	write("ca-cert.pem", "CERTIFICATE", caDER)
	cert, key := issue(2, "localhost", x509.ExtKeyUsageServerAuth)
	write("server-cert.pem", "CERTIFICATE", cert)
	write("server-key.pem", "PRIVATE KEY", key)
	cert, key = issue(3, "client", x509.ExtKeyUsageClientAuth)
	write("client-cert.pem", "CERTIFICATE", cert)
	write("client-key.pem", "PRIVATE KEY", key)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return dir, pool
}

func tlsURI(s *server, query string) string {
	t := s.target
	t.TLS = true
	if u := t.String(); strings.Contains(u, "?") {
		return u + "&" + query
	} else {
		return u + "?" + query
	}
}

func TestTLSNbdkit(t *testing.T) {
	dir, pool := certDir(t)
	s := nbdkit(t, "--tls=require", "--tls-certificates="+dir, "pattern", "size=4M")
	check := func(name, uri string, opts Options) {
		t.Helper()
		c, err := Dial(testCtx(t), uri, opts)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		defer c.Close()
		p := make([]byte, 1<<20)
		if err := c.ReadAt(testCtx(t), p, 4096); err != nil || !bytes.Equal(p, patternAt(4096, len(p))) {
			t.Errorf("%s: read: %v or wrong data", name, err)
		}
	}
	check("tls-certificates", tlsURI(s, "tls-certificates="+dir), Options{})
	check("Options.TLS", s.target.String(), Options{TLS: &tls.Config{RootCAs: pool}})
	check("tls-verify-peer=false", tlsURI(s, "tls-verify-peer=false"), Options{})

	_, err := Dial(testCtx(t), s.uri(), Options{})
	if !errors.Is(err, ErrTLSRequired) || !strings.Contains(err.Error(), "nbds") {
		t.Errorf("plain Dial to a TLS-only server: %v; want ErrTLSRequired and a hint", err)
	}
	_, err = Dial(testCtx(t), tlsURI(s, "x-none=1"), Options{})
	var unknownCA x509.UnknownAuthorityError
	if !errors.As(err, &unknownCA) {
		t.Errorf("Dial without the CA: %v; want an unknown authority error", err)
	}
	_, err = Dial(testCtx(t), tlsURI(s, "tls-hostname=elsewhere"), Options{TLS: &tls.Config{RootCAs: pool}})
	var badHost x509.HostnameError
	if !errors.As(err, &badHost) {
		t.Errorf("Dial with the wrong tls-hostname: %v; want a hostname error", err)
	}
}

func TestTLSRefused(t *testing.T) {
	s := nbdkit(t, "pattern", "size=1M")
	_, err := Dial(testCtx(t), tlsURI(s, "tls-verify-peer=0"), Options{})
	if err == nil || !strings.Contains(err.Error(), "TLS was asked for: server refused NBD_OPT_STARTTLS") {
		t.Errorf("nbds:// to a server without TLS: %v; want a refusal of STARTTLS", err)
	}
}

func TestTLSQemuNBD(t *testing.T) {
	dir, _ := certDir(t)
	img, want := sparseImage(t)
	testbed.Need(t, "qemu-nbd")
	s := startTCPServer(t, "qemu-nbd", "-b", "127.0.0.1", "-p", "PORT", "-t", "-r", "-f", "qcow2", "--shared=2",
		"--object", "tls-creds-x509,id=tls0,endpoint=server,dir="+dir, "--tls-creds", "tls0", img)
	uri := tlsURI(s, "tls-certificates="+dir)
	if !strings.HasPrefix(uri, "nbds://127.0.0.1:") {
		t.Fatalf("uri %s", uri)
	}
	// QEMU's server verifies the client's certificate by default: the
	// one in tls-certificates.
	c := dial(t, uri, Options{MetaContexts: []string{ContextAllocation}})
	p := make([]byte, len(want))
	holes, err := c.ReadAtSparse(testCtx(t), p, 0)
	if err != nil || !bytes.Equal(p, want) || len(holes) == 0 {
		t.Errorf("ReadAtSparse over TLS: %v, %d holes, data right %v", err, len(holes), bytes.Equal(p, want))
	}
}

// An option session ends with NBD_OPT_ABORT, after which QEMU hangs up at
// once: over a unix socket the TLS goodbye then fails, which is not the
// caller's error.
func TestTLSInfoQemuNBDUnix(t *testing.T) {
	dir, _ := certDir(t)
	img, want := sparseImage(t)
	s := startServer(t, "qemu-nbd", "-k", "SOCK", "-t", "-r", "-f", "qcow2", "--shared=2",
		"--object", "tls-creds-x509,id=tls0,endpoint=server,dir="+dir, "--tls-creds", "tls0", img)
	uri := tlsURI(s, "tls-certificates="+dir+"&tls-hostname=localhost")
	for i := 0; i < 10; i++ {
		if info, err := Info(testCtx(t), uri, Options{}); err != nil || info.Size != uint64(len(want)) {
			t.Fatalf("Info over TLS (%s) = %+v, %v", uri, info, err)
		}
	}
}
