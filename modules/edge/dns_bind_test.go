package edge_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/modules/edge"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
)

// bind is Debian's BIND 9 named, started by the test on a loopback port,
// primary for iklim.test with updates allowed for one TSIG key.
type bind struct {
	addr, keyName, secret string
}

const bindZone = `$TTL 300
@        IN SOA ns.iklim.test. hostmaster.iklim.test. 1 3600 600 86400 300
@        IN NS  ns.iklim.test.
ns       IN A   127.0.0.1
grafana  600 IN A   192.0.2.50
`

func startBind(t *testing.T) *bind {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/named"); err != nil {
		if os.Getenv("IKLIM_REQUIRE_SSHD") == "1" {
			t.Fatal("named not installed (apt-get install bind9)")
		}
		t.Skip("named not installed (apt-get install bind9)")
	}
	if os.Geteuid() != 0 {
		t.Skip("named runs as root here")
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	sec := make([]byte, 32)
	_, _ = rand.Read(sec)
	b := &bind{addr: "127.0.0.1:" + strconv.Itoa(port), keyName: "iklim-test-key", secret: base64.StdEncoding.EncodeToString(sec)}
	conf := fmt.Sprintf(`options {
  directory "%[1]s";
  pid-file "%[1]s/named.pid";
  session-keyfile "%[1]s/session.key";
  listen-on port %[2]d { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  allow-query { any; };
};
controls { };
key "%[3]s" { algorithm hmac-sha256; secret "%[4]s"; };
zone "iklim.test" { type primary; file "%[1]s/iklim.test.zone"; allow-update { key "%[3]s"; }; };
`, dir, port, b.keyName, b.secret)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "named.conf"), []byte(conf), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "iklim.test.zone"), []byte(bindZone), 0o644))
	logf, err := os.Create(filepath.Join(dir, "named.log"))
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command("/usr/sbin/named", "-g", "-4", "-c", filepath.Join(dir, "named.conf"))
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "named.log"))
			t.Logf("named log:\n%s", log)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		q := new(dns.Msg)
		q.SetQuestion("iklim.test.", dns.TypeSOA)
		in, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(q, b.addr)
		if err == nil && in.Rcode == dns.RcodeSuccess && len(in.Answer) > 0 {
			return b
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "named.log"))
			t.Fatalf("named exited:\n%s", log)
		default:
		}
		require.True(t, time.Now().Before(deadline), "named did not answer within 15s: %v", err)
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *bind) module() *edge.DNSRecord {
	return &edge.DNSRecord{Provider: "rfc2136", Zone: "iklim.test", Server: b.addr, TSIGName: b.keyName, TSIGSecret: b.secret, VerifyTimeout: "10s"}
}

// lookup asks named directly (miekg/dns, no TSIG) for name's A records.
func (b *bind) lookup(t *testing.T, name string) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name+".iklim.test.", dns.TypeA)
	in, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(q, b.addr)
	require.NoError(t, err)
	var out []string
	for _, rr := range in.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// TestDNSRecordBind runs the scenario against a real BIND 9.
func TestDNSRecordBind(t *testing.T) {
	dnsScenario(t, startBind(t))
}

// TestDNSRecordBindWrongTSIG: a wrong secret and an unknown key name give
// errors that say so, and nothing changes.
func TestDNSRecordBindWrongTSIG(t *testing.T) {
	b := startBind(t)
	ctx := context.Background()
	c := transport.NewLocalConn("localhost")
	wrong := make([]byte, 32)
	_, _ = rand.Read(wrong)
	for name, mut := range map[string]func(*edge.DNSRecord){
		"wrong secret":     func(m *edge.DNSRecord) { m.TSIGSecret = base64.StdEncoding.EncodeToString(wrong) },
		"unknown key name": func(m *edge.DNSRecord) { m.TSIGName = "no-such-key" },
	} {
		t.Run(name, func(t *testing.T) {
			m := b.module()
			m.Names, m.Values = []string{"api"}, []string{"192.0.2.10"}
			mut(m)
			ch, err := m.Check(ctx, c)
			require.NoError(t, err, "reading needs no key")
			require.NotNil(t, ch)
			err = m.Apply(ctx, c, ch)
			require.Error(t, err)
			require.Contains(t, err.Error(), "TSIG")
			require.Contains(t, err.Error(), "tsig_secret")
			require.NotContains(t, err.Error(), m.TSIGSecret)
			require.Empty(t, b.lookup(t, "api"))
		})
	}
}

// TestDNSRecordBindDelegated runs dns_record through the engine as a
// delegated step: the change is recorded in the control machine's backup
// root with the TSIG secret sealed, and the stock rollback undoes it.
func TestDNSRecordBindDelegated(t *testing.T) {
	b := startBind(t)
	e := newEnv(t)
	s := func() runner.Step {
		m := b.module()
		m.Record = []*edge.DNSRecordBlock{{Name: "api", Values: []string{"192.0.2.11"}}, {Name: "grafana", Values: []string{"192.0.2.11"}, TTL: 900}}
		st := step("dns", "dns_record", m)
		st.Delegate, st.RunOnce = true, true
		return st
	}
	id, r := e.play(false, s())
	require.Equal(t, 1, r.Changed, r.Error)
	require.Equal(t, []string{"192.0.2.11"}, b.lookup(t, "api"))
	require.Equal(t, []string{"192.0.2.11"}, b.lookup(t, "grafana"))
	_, err := os.Stat(e.host.BackupRoot)
	require.True(t, os.IsNotExist(err), "nothing recorded on the host")
	require.NotEmpty(t, grepTree(t, e.control.BackupRoot, "dns_record"), "recorded on the control machine")
	require.Empty(t, grepTree(t, e.control.BackupRoot, b.secret), "the TSIG secret is sealed")
	for _, ev := range e.events {
		require.NotContains(t, fmt.Sprint(ev), b.secret)
	}

	_, r = e.play(false, s())
	require.Zero(t, r.Changed, r.Error)

	r = e.rollback(id)
	require.Zero(t, r.Failed, r.Error)
	require.Empty(t, b.lookup(t, "api"))
	require.Equal(t, []string{"192.0.2.50"}, b.lookup(t, "grafana"))
	require.False(t, strings.Contains(r.Error, b.secret))
}
