package edge_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/edge"
)

// testCA is a root and an intermediate made by the test; leaves are signed
// by the intermediate.
type testCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

func sign(t *testing.T, tpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tpl.SerialNumber = serial
	if parent == nil {
		parent = tpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, pub, key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

func newCA(t *testing.T) *testCA {
	now := time.Now()
	ca := &testCA{rootKey: newKey(t), interKey: newKey(t)}
	ca.root = sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "iklim test root"}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, ca.rootKey.Public(), ca.rootKey)
	ca.inter = sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "iklim test intermediate"}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(2, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, ca.root, ca.interKey.Public(), ca.rootKey)
	return ca
}

// leaf is a certificate and key written as PEM files on the control machine.
type leaf struct {
	cert          *x509.Certificate
	certPath, key string
	chainPath     string
	fp            string
}

// issue makes a leaf for names valid from nb to na and writes cert (leaf
// only), chain (intermediate) and key PEM files into dir.
func (ca *testCA) issue(t *testing.T, dir, name string, names []string, nb, na time.Time) leaf {
	k := newKey(t)
	c := sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: names[0]}, DNSNames: names, NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca.inter, k.Public(), ca.interKey)
	l := leaf{cert: c, fp: edge.Fingerprint(c),
		certPath: filepath.Join(dir, name+".crt"), key: filepath.Join(dir, name+".key"), chainPath: filepath.Join(dir, name+".chain")}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(l.certPath, pemCert(c), 0o644))
	require.NoError(t, os.WriteFile(l.chainPath, pemCert(ca.inter), 0o644))
	require.NoError(t, os.WriteFile(l.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return l
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// nginx is Debian's nginx, run as root by the test on a loopback port with
// its own prefix, serving TLS with the files under dir/ssl.
type nginx struct {
	dir, conf string
	port      int
	cert, key string
}

func startNginx(t *testing.T, first leaf) *nginx {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("IKLIM_REQUIRE_SSHD") == "1" {
			t.Fatalf("nginx not installed (apt-get install nginx)")
		}
		t.Skip("nginx not installed (apt-get install nginx)")
	}
	dir, err := os.MkdirTemp("", "iklim-nginx-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &nginx{dir: dir, conf: filepath.Join(dir, "nginx.conf"), cert: filepath.Join(dir, "ssl", "fullchain.pem"), key: filepath.Join(dir, "ssl", "privkey.pem")}
	for _, d := range []string{"ssl", "tmp", "logs"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	full, err := os.ReadFile(first.certPath)
	require.NoError(t, err)
	chain, err := os.ReadFile(first.chainPath)
	require.NoError(t, err)
	key, err := os.ReadFile(first.key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(n.cert, append(full, chain...), 0o644))
	require.NoError(t, os.WriteFile(n.key, key, 0o600))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	n.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	tmp := filepath.Join(dir, "tmp")
	conf := fmt.Sprintf(`daemon on;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log;
worker_processes 1;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[2]s/body; proxy_temp_path %[2]s/proxy; fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi; scgi_temp_path %[2]s/scgi;
  server {
    listen 127.0.0.1:%[3]d ssl;
    server_name app.iklim.test;
    ssl_certificate %[4]s;
    ssl_certificate_key %[5]s;
    location / { return 200 "ok\n"; }
  }
}
`, dir, tmp, n.port, n.cert, n.key)
	require.NoError(t, os.WriteFile(n.conf, []byte(conf), 0o644))
	out, err := exec.Command(bin, "-p", dir, "-c", n.conf).CombinedOutput()
	require.NoError(t, err, "start nginx: %s", out)
	t.Cleanup(func() {
		b, err := os.ReadFile(filepath.Join(dir, "nginx.pid"))
		if err != nil {
			return
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGQUIT)
			for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
	return n
}

func (n *nginx) reload() string {
	return "nginx -p " + n.dir + " -c " + n.conf + " -s reload"
}

func (n *nginx) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// served is the fingerprint nginx serves now, through the host's SSH
// connection.
func served(t *testing.T, c modules.Conn, addr string) string {
	t.Helper()
	fp, err := edge.ServedFingerprint(context.Background(), c.(modules.Dialer), addr, "app.iklim.test")
	require.NoError(t, err)
	return fp
}

func sha(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return edge.SHA256Hex(b)
}

// TestCertReloadNginx runs cert_reload through the engine, with backups,
// against Debian's nginx reached through a real sshd: install, no change on
// rerun, rotation, refusals that touch nothing, a reload that never serves
// the new certificate (put back), and rollback.
func TestCertReloadNginx(t *testing.T) {
	e := newEnv(t)
	ca := newCA(t)
	src := t.TempDir()
	now := time.Now()
	names := []string{"app.iklim.test", "api.iklim.test"}
	c0 := ca.issue(t, src, "c0", names, now.Add(-time.Hour), now.AddDate(0, 0, 60))
	c1 := ca.issue(t, src, "c1", names, now.Add(-time.Hour), now.AddDate(0, 0, 90))
	c2 := ca.issue(t, src, "c2", names, now.Add(-time.Hour), now.AddDate(0, 0, 120))
	ng := startNginx(t, c0)
	c := e.conn()
	require.Equal(t, c0.fp, served(t, c, ng.addr()))

	mod := func(l leaf, mut ...func(*edge.CertReload)) *edge.CertReload {
		m := &edge.CertReload{
			SrcCert: l.certPath, SrcChain: l.chainPath, SrcKey: l.key,
			Cert: ng.cert, Key: ng.key, Names: names, MinDays: 30,
			ReloadCommand: ng.reload(), Verify: ng.addr(), VerifyName: "app.iklim.test", VerifyTimeout: "20s",
		}
		for _, f := range mut {
			f(m)
		}
		return m
	}
	files := func() [2]string { return [2]string{sha(t, ng.cert), sha(t, ng.key)} }

	// Check mode: which fingerprint would replace which, with expiry; no change.
	before := files()
	_, r := e.play(true, step("cert", "cert_reload", mod(c1)))
	require.Equal(t, 1, r.Changed, r.Error)
	d := e.lastDiff()
	require.NotNil(t, d)
	assert.Contains(t, d.Before, c0.fp)
	assert.Contains(t, d.Before, c0.cert.NotAfter.UTC().Format(time.RFC3339))
	assert.Contains(t, d.After, c1.fp)
	assert.Contains(t, d.After, c1.cert.NotAfter.UTC().Format(time.RFC3339))
	require.Equal(t, before, files(), "check mode changes nothing")
	require.Equal(t, c0.fp, served(t, c, ng.addr()))

	// Install: reloaded, and the handshake serves the new leaf.
	run1, r := e.play(false, step("cert", "cert_reload", mod(c1)))
	require.Equal(t, 1, r.Changed, r.Error)
	require.Zero(t, r.Failed, r.Error)
	require.Equal(t, c1.fp, served(t, c, ng.addr()))
	fi, err := os.Stat(ng.key)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	full, err := os.ReadFile(ng.cert)
	require.NoError(t, err)
	require.Equal(t, string(pemCert(c1.cert))+string(pemCert(ca.inter)), string(full), "cert holds leaf then chain")

	// Rerun: nothing to do.
	_, r = e.play(false, step("cert", "cert_reload", mod(c1)))
	require.Zero(t, r.Changed, r.Error)
	require.Zero(t, r.Failed, r.Error)

	// Rotation, from files on the host (what an ACME client wrote there).
	hostSrc, err := os.MkdirTemp("", "iklim-acme-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(hostSrc) })
	for _, f := range [][2]string{{c2.certPath, "fullchain.pem"}, {c2.chainPath, "chain.pem"}, {c2.key, "privkey.pem"}} {
		require.NoError(t, os.WriteFile(filepath.Join(hostSrc, f[1]), []byte(mustRead(t, f[0])), 0o600))
	}
	run2, r := e.play(false, step("cert", "cert_reload", mod(c2, func(m *edge.CertReload) {
		m.RemoteSrc = true
		m.SrcCert, m.SrcChain, m.SrcKey = filepath.Join(hostSrc, "fullchain.pem"), filepath.Join(hostSrc, "chain.pem"), filepath.Join(hostSrc, "privkey.pem")
	})))
	require.Equal(t, 1, r.Changed, r.Error)
	require.Equal(t, c2.fp, served(t, c, ng.addr()))
	_ = run1
	// Both replaced keys (c0's by the install, c1's by the rotation) are in
	// the backups, sealed: never in clear text.
	for _, l := range []leaf{c0, c1} {
		require.Empty(t, grepTree(t, e.host.BackupRoot, strings.Split(mustRead(t, l.key), "\n")[1]), "a replaced key is sealed in the backup")
	}
	require.NotEmpty(t, grepTree(t, e.host.BackupRoot, "cert_reload"), "the changes were recorded")

	// Refusals change nothing.
	before = files()
	bad := ca.issue(t, src, "bad", names, now.Add(-time.Hour), now.AddDate(0, 0, 90))
	_, r = e.play(false, step("cert", "cert_reload", mod(bad, func(m *edge.CertReload) { m.SrcKey = c1.key })))
	require.Equal(t, 1, r.Failed)
	require.Contains(t, r.Error, "does not match")
	expired := ca.issue(t, src, "expired", names, now.AddDate(0, 0, -30), now.Add(-time.Hour))
	_, r = e.play(false, step("cert", "cert_reload", mod(expired)))
	require.Equal(t, 1, r.Failed)
	require.Contains(t, r.Error, "expired")
	soon := ca.issue(t, src, "soon", names, now.Add(-time.Hour), now.AddDate(0, 0, 10))
	_, r = e.play(false, step("cert", "cert_reload", mod(soon)))
	require.Equal(t, 1, r.Failed)
	require.Contains(t, r.Error, "within min_days 30")
	_, r = e.play(false, step("cert", "cert_reload", mod(c1, func(m *edge.CertReload) { m.Names = []string{"other.iklim.test"} })))
	require.Equal(t, 1, r.Failed)
	require.Contains(t, r.Error, `does not cover "other.iklim.test"`)
	wrongOrder := filepath.Join(src, "wrong-order.chain")
	require.NoError(t, os.WriteFile(wrongOrder, append(pemCert(ca.root), pemCert(ca.inter)...), 0o644))
	_, r = e.play(false, step("cert", "cert_reload", mod(c1, func(m *edge.CertReload) { m.SrcChain = wrongOrder })))
	require.Equal(t, 1, r.Failed)
	require.Contains(t, r.Error, "chain out of order")
	require.Equal(t, before, files(), "refused input touches nothing")
	require.Equal(t, c2.fp, served(t, c, ng.addr()))

	// A reload that never serves the new certificate: put back.
	c3 := ca.issue(t, src, "c3", names, now.Add(-time.Hour), now.AddDate(0, 0, 90))
	_, r = e.play(false, step("cert", "cert_reload", mod(c3, func(m *edge.CertReload) {
		m.ReloadCommand, m.VerifyTimeout = "true", "3s"
	})))
	require.Equal(t, 1, r.Failed)
	require.Contains(t, r.Error, "put back")
	require.Contains(t, r.Error, c2.fp, "the error names what was served")
	require.Equal(t, before, files(), "the previous files are back")
	require.Equal(t, c2.fp, served(t, c, ng.addr()))
	ents, err := os.ReadDir(filepath.Dir(ng.cert))
	require.NoError(t, err)
	require.Len(t, ents, 2, "no temp or previous copies left")

	// Rollback of the rotation: c1 is back and served.
	r = e.rollback(run2)
	require.Zero(t, r.Failed, r.Error)
	require.Equal(t, 1, r.Changed)
	require.Equal(t, c1.fp, served(t, c, ng.addr()))
	full, err = os.ReadFile(ng.cert)
	require.NoError(t, err)
	require.Contains(t, string(full), string(pemCert(c1.cert)))
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// TestCertReloadPlaceholder creates a self-signed certificate only when none
// is installed, through a real sshd.
func TestCertReloadPlaceholder(t *testing.T) {
	e := newEnv(t)
	dir, err := os.MkdirTemp("", "iklim-placeholder-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	m := func() *edge.CertReload {
		return &edge.CertReload{Placeholder: true, Names: []string{"vault.iklim.test", "127.0.0.1"},
			Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	}
	_, r := e.play(false, step("placeholder", "cert_reload", m()))
	require.Equal(t, 1, r.Changed, r.Error)
	first := mustRead(t, filepath.Join(dir, "tls.crt"))
	certs, err := x509.ParseCertificate(func() []byte { b, _ := pem.Decode([]byte(first)); return b.Bytes }())
	require.NoError(t, err)
	require.Equal(t, []string{"vault.iklim.test"}, certs.DNSNames)
	require.Equal(t, "127.0.0.1", certs.IPAddresses[0].String())
	fi, err := os.Stat(filepath.Join(dir, "tls.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	_, r = e.play(false, step("placeholder", "cert_reload", m()))
	require.Zero(t, r.Changed, r.Error)
	require.Equal(t, first, mustRead(t, filepath.Join(dir, "tls.crt")), "an existing certificate is never replaced")

	// Check alone, straight on the connection: nothing to do.
	ch, err := m().Check(context.Background(), e.conn())
	require.NoError(t, err)
	require.Nil(t, ch)
}

// TestCertReloadValidateBeforeHosts: a bad local certificate is an argument
// error found by Validate, before any host is touched.
func TestCertReloadValidateBeforeHosts(t *testing.T) {
	ca := newCA(t)
	src := t.TempDir()
	now := time.Now()
	a := ca.issue(t, src, "a", []string{"a.test"}, now.Add(-time.Hour), now.AddDate(0, 0, 90))
	b := ca.issue(t, src, "b", []string{"a.test"}, now.Add(-time.Hour), now.AddDate(0, 0, 90))
	m := &edge.CertReload{SrcCert: a.certPath, SrcKey: b.key, Cert: "/etc/ssl/x.pem", Key: "/etc/ssl/x.key"}
	err := m.Validate()
	var ae *modules.ArgError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, "src_cert", ae.Arg)
	require.Contains(t, err.Error(), "does not match")
	require.NotContains(t, err.Error(), "PRIVATE KEY")

	// A wildcard certificate covers one label under it, and can be asked
	// for by its own name.
	w := ca.issue(t, src, "w", []string{"*.iklim.test"}, now.Add(-time.Hour), now.AddDate(0, 0, 90))
	m = &edge.CertReload{SrcCert: w.certPath, SrcKey: w.key, Cert: "/x.pem", Key: "/x.key", Names: []string{"api.iklim.test", "*.iklim.test"}}
	require.NoError(t, m.Validate())
	m.Names = []string{"a.b.iklim.test"}
	require.ErrorContains(t, m.Validate(), `does not cover "a.b.iklim.test"`)

	m = &edge.CertReload{Placeholder: true, Cert: "/x.pem", Key: "/x.key"}
	require.ErrorAs(t, m.Validate(), &ae)
	require.Equal(t, "names", ae.Arg)
	m = &edge.CertReload{SrcCert: a.certPath, SrcKey: a.key, Cert: "/x.pem", Key: "/x.key", ReloadCommand: "x", ReloadService: "y"}
	require.ErrorAs(t, m.Validate(), &ae)
}
