package commands

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A pull job with --tls on TCP, read with the bed's client certificates:
// each file compares identical with its disk. Certificates that QEMU or the
// client refuse fail before anything is written, naming the export and
// what to change.
func TestFetchTLS(t *testing.T) {
	open, bed := realDaemon(t)
	certs := bed.TLSClientDir(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:qcow2:32M")
	bed.Write(t, dom, "vda", 0x5a, 1<<20, 4<<20)
	bed.Write(t, dom, "vdb", 0xa5, 0, 1<<20)
	out := t.TempDir()

	r := vb(t, open, "backup-begin", dom, "--pull", "--tls", "--server", "tcp:127.0.0.1", "--checkpoint", "t1")
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "nbds://127.0.0.1:") {
		t.Fatalf("backup-begin --tls printed no nbds:// URI:\n%s", r.stdout)
	}
	t.Cleanup(func() { bed.TryVirsh("domjobabort", dom) })

	caOnly := t.TempDir()
	copyFile(t, filepath.Join(certs, "ca-cert.pem"), filepath.Join(caOnly, "ca-cert.pem"))
	wrongCA := otherCA(t)
	// The right CA for the server, a client certificate of another CA.
	strangeClient := t.TempDir()
	copyFile(t, filepath.Join(certs, "ca-cert.pem"), filepath.Join(strangeClient, "ca-cert.pem"))
	for _, f := range []string{"client-cert.pem", "client-key.pem"} {
		copyFile(t, filepath.Join(wrongCA, f), filepath.Join(strangeClient, f))
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no certificates", nil, []string{"serves its exports over TLS", "pass --tls-certs DIR"}},
		{"only the CA", []string{"--tls-certs", caOnly},
			[]string{`export "vda" at nbds://127.0.0.1:`, "requires a client certificate", caOnly + " has no client-cert.pem"}},
		{"another CA", []string{"--tls-certs", wrongCA},
			[]string{`export "vda" at nbds://127.0.0.1:`, "not signed by the CA in " + filepath.Join(wrongCA, "ca-cert.pem")}},
		{"a client of another CA", []string{"--tls-certs", strangeClient},
			[]string{`export "vda" at nbds://127.0.0.1:`, "did not accept the client certificate " + filepath.Join(strangeClient, "client-cert.pem")}},
		{"no folder", []string{"--tls-certs", filepath.Join(out, "nowhere")}, []string{"no such folder"}},
		{"an empty folder", []string{"--tls-certs", t.TempDir()}, []string{"no ca-cert.pem there"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			to := filepath.Join(out, strings.ReplaceAll(tc.name, " ", "-"))
			r := vb(t, open, append([]string{"backup-fetch", dom, "--to", to}, tc.args...)...)
			wantCode(t, r, ExitFailure)
			wantStderr(t, r, tc.want...)
			if _, err := os.Stat(to); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed fetch left %s: %v", to, err)
			}
		})
	}

	r = vb(t, open, "backup-fetch", dom, "--to", out+"/ok", "--tls-certs", certs)
	wantCode(t, r, ExitOK)
	for _, disk := range []string{"vda", "vdb"} {
		compareImages(t, bed.DiskPath(dom, disk), "qcow2", out+"/ok/"+disk+".qcow2", "qcow2")
	}
	// Without --tls-certs, the first default folder holding a ca-cert.pem.
	env, _, stderr := testEnv(open, nil)
	env.CertDirs = func() []string { return []string{t.TempDir(), certs} }
	if code := Main(context.Background(), []string{"vbackup", "backup-fetch", dom, "--to", out + "/default", "--disk", "vda"}, env); code != ExitOK {
		t.Fatalf("fetch with the certificates in a default folder: exit %d\n%s", code, stderr)
	}
	compareImages(t, bed.DiskPath(dom, "vda"), "qcow2", out+"/default/vda.qcow2", "qcow2")
	wantCode(t, vb(t, open, "backup-end", dom), ExitOK)
}

// backup-begin --fetch passes --tls-certs on: here over a unix socket with
// TLS (nbds+unix). On a job without TLS, --tls-certs is only noted.
func TestBeginFetchTLS(t *testing.T) {
	open, bed := realDaemon(t)
	certs := bed.TLSClientDir(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x77, 2<<20, 2<<20)
	out := t.TempDir()

	r := vb(t, open, "backup-begin", dom, "--pull", "--tls", "--checkpoint", "u1", "--fetch", out+"/u1", "--tls-certs", certs)
	wantCode(t, r, ExitOK)
	compareImages(t, bed.DiskPath(dom, "vda"), "qcow2", out+"/u1/vda.qcow2", "qcow2")

	r = vb(t, open, "backup-begin", dom, "--pull", "--incremental", "u1", "--checkpoint", "u2", "--fetch", out+"/u2",
		"--backing", out+"/u1", "--tls-certs", certs)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "serves its exports without TLS; --tls-certs is not used")
	compareImages(t, bed.DiskPath(dom, "vda"), "qcow2", out+"/u2/vda.qcow2", "qcow2")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// otherCA makes a client certificate folder of a CA that is not the bed's.
func otherCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := tmpl(1, "another CA")
	ca.IsCA, ca.BasicConstraintsValid, ca.KeyUsage = true, true, x509.KeyUsageCertSign
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := tmpl(2, "client")
	leaf.KeyUsage, leaf.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write("ca-cert.pem", "CERTIFICATE", caDER)
	write("client-cert.pem", "CERTIFICATE", der)
	write("client-key.pem", "PRIVATE KEY", keyDER)
	return dir
}
