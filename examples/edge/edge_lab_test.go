package edge

// End-to-end test of examples/edge/site.hcl through the built binary on the
// lab: a placeholder certificate, nginx on iklim-app-01, the real certificate
// installed, reloaded and verified through the SSH connection, and A records
// on the lab's BIND (named in iklim-db-01, from `lab.sh up`). Run twice: the
// second run changes nothing. Then the first run is rolled back.
//
//	bash internal/lab/lab.sh up
//	IKLIM_LAB=required go test -race ./examples/edge/ -v

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/internal/labtest"
	"github.com/iklimco/iklim/runner"
)

const (
	appHost   = "iklim-app-01"
	bindAddr  = "10.77.0.21:53"
	zone      = "lab.iklim.test."
	edgeDir   = "/etc/iklim/edge"
	nginxPid  = "/run/iklim-edge-nginx.pid"
	certName  = "app.lab.iklim.test"
	tsigName  = "iklim-lab."
	appAddr   = "10.77.0.11"
	cmdTimout = 4 * time.Minute
)

var recordNames = []string{"api", "apigw", "rabbitmq", "grafana"}

// writeCert writes a self-signed leaf for certName as fullchain.pem and
// privkey.pem into dir and returns its SHA-256 fingerprint (hex, upper case
// with colons, as openssl prints it).
func writeCert(t *testing.T, dir string) string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: certName},
		DNSNames: []string{certName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(0, 0, 60),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, k.Public(), k)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "fullchain.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "privkey.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	s := sha256.Sum256(der)
	return opensslFP(hex.EncodeToString(s[:]))
}

func opensslFP(h string) string {
	h = strings.ToUpper(h)
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// served asks openssl on the app node what nginx serves.
func served(t *testing.T, l *labtest.Lab) string {
	t.Helper()
	out, err := l.Exec(t, appHost, "openssl s_client -connect 127.0.0.1:8443 -servername "+certName+
		" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256")
	require.NoError(t, err)
	_, fp, _ := strings.Cut(out, "=")
	return fp
}

// lookupA asks the lab's named for name's A records.
func lookupA(t *testing.T, name string) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name+"."+zone, dns.TypeA)
	in, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(q, bindAddr)
	require.NoError(t, err)
	var out []string
	for _, rr := range in.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// cleanup stops the example's nginx, removes its directory and deletes the
// example's records, so that neither a leftover nor this test's own state
// is seen by the next run.
func cleanup(t *testing.T, l *labtest.Lab, secret string) {
	t.Helper()
	_, err := l.Exec(t, appHost, `sudo sh -c 'if [ -s `+nginxPid+` ]; then kill -QUIT "$(cat `+nginxPid+`)" 2>/dev/null; for i in 1 2 3 4 5 6 7 8 9 10; do [ -e `+nginxPid+` ] || break; sleep 0.3; done; rm -f `+nginxPid+`; fi; rm -rf `+edgeDir+`'`)
	require.NoError(t, err)
	m := new(dns.Msg)
	m.SetUpdate(zone)
	for _, n := range recordNames {
		m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: n + "." + zone, Rrtype: dns.TypeA, Class: dns.ClassINET}}})
	}
	m.SetTsig(tsigName, dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{tsigName: secret}}
	in, _, err := c.Exchange(m, bindAddr)
	require.NoError(t, err)
	require.Equal(t, dns.RcodeSuccess, in.Rcode)
}

type cli struct {
	t      *testing.T
	binary string
	env    []string
}

// play runs the binary with --output json and returns the recap.
func (c *cli) run(args ...string) (*runner.Recap, string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.binary, args...)
	cmd.Env = append(os.Environ(), c.env...)
	out, _ := cmd.CombinedOutput()
	var recap *runner.Recap
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev runner.Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Type == runner.EventRecap {
			recap = ev.Recap
		}
	}
	require.NotNil(c.t, recap, "no recap from iklim %s:\n%s", strings.Join(args, " "), out)
	return recap, string(out)
}

func host(r *runner.Recap, name string) runner.HostRecap {
	for _, h := range r.Hosts {
		if h.Host == name {
			return h
		}
	}
	return runner.HostRecap{}
}

func TestEdgeExampleOnLab(t *testing.T) {
	l := labtest.Require(t)
	secretB, err := os.ReadFile(filepath.Join(l.Dir, "bind", "tsig.secret"))
	if err != nil {
		if os.Getenv("IKLIM_LAB") == "required" {
			t.Fatalf("the lab's named is not set up (bash internal/lab/lab.sh up): %v", err)
		}
		t.Skipf("the lab's named is not set up (bash internal/lab/lab.sh up): %v", err)
	}
	secret := strings.TrimSpace(string(secretB))
	root, err := labtest.ModuleRoot()
	require.NoError(t, err)
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "iklim")
	build := exec.Command("go", "build", "-o", bin, "./cmd/iklim")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build: %s", out)

	cleanup(t, l, secret)
	t.Cleanup(func() { cleanup(t, l, secret) })

	certDir := filepath.Join(tmp, "certs")
	require.NoError(t, os.Mkdir(certDir, 0o700))
	fp := writeCert(t, certDir)
	c := &cli{t: t, binary: bin, env: []string{
		"IKLIM_STATE_DIR=" + filepath.Join(tmp, "state"),
		"IKLIM_CONTROL_BACKUP_ROOT=" + filepath.Join(tmp, "control-backups"),
		"IKLIM_VAR_tsig_secret=" + secret,
	}}
	args := []string{"play", "-i", l.InventoryPath, "--output", "json", "-e", "cert_dir=" + certDir, filepath.Join(root, "examples", "edge", "site.hcl")}

	start := time.Now()
	r1, out1 := c.run(args...)
	h := host(r1, appHost)
	require.Zero(t, h.Failed, "%s\n%s", h.Error, out1)
	require.Equal(t, 7, h.Changed, out1)
	t.Logf("first run: %s, changed=%d", time.Since(start).Round(time.Millisecond), h.Changed)
	require.Equal(t, fp, served(t, l), "nginx serves the installed certificate")
	for _, n := range recordNames {
		require.Equal(t, []string{appAddr}, lookupA(t, n), n)
	}
	require.NotContains(t, out1, secret, "the TSIG secret never shows")

	start = time.Now()
	r2, out2 := c.run(args...)
	h = host(r2, appHost)
	require.Zero(t, h.Failed, "%s\n%s", h.Error, out2)
	require.Zero(t, h.Changed, "second run changes nothing:\n%s", out2)
	t.Logf("second run: %s, changed=0", time.Since(start).Round(time.Millisecond))

	// Rollback of the first run: records deleted, the placeholder served
	// again (the certificate step put back and reloaded).
	rb, outRB := c.run("rollback", "-i", l.InventoryPath, "-l", appHost, "--output", "json", "--run", r1.RunID)
	h = host(rb, appHost)
	require.Zero(t, h.Failed, "%s\n%s", h.Error, outRB)
	for _, n := range recordNames {
		require.Empty(t, lookupA(t, n), n)
	}
	require.NotEqual(t, fp, served(t, l), "the placeholder is served again")
	require.NotContains(t, outRB, secret)
}
