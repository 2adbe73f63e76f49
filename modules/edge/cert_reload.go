package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
)

// CertReload installs a TLS certificate, its chain and key on a host, reloads
// the server that uses them when the certificate changed, and verifies with a
// TLS handshake, tunnelled through the host's SSH connection, that the new
// certificate is served; otherwise it puts the previous one back.
//
// The input is validated before the host is touched: the PEM parses, the key
// matches the certificate, the chain is in order, the names are covered, and
// the certificate is not expired nor expiring within min_days.
type CertReload struct {
	Cert  string `hcl:"cert" doc:"absolute remote path of the certificate; it gets the leaf followed by the chain (fullchain) unless chain is set"`
	Key   string `hcl:"key" doc:"absolute remote path of the private key (mode key_mode, 0600 by default); never shown, sealed in backups"`
	Chain string `hcl:"chain,optional" doc:"absolute remote path for the chain alone; then cert gets only the leaf"`

	SrcCert     string   `hcl:"src_cert,optional" doc:"PEM certificate (leaf, optionally followed by its chain) on the control machine, or on the host with remote_src"`
	SrcKey      string   `hcl:"src_key,optional" doc:"PEM private key matching src_cert (PKCS#8, PKCS#1 or SEC 1)"`
	SrcChain    string   `hcl:"src_chain,optional" doc:"PEM chain (intermediates, issuer of the leaf first) when src_cert holds only the leaf"`
	RemoteSrc   bool     `hcl:"remote_src,optional" doc:"src_cert, src_key and src_chain are paths on the host (what SWAG or an ACME client wrote), not on the control machine"`
	Placeholder bool     `hcl:"placeholder,optional" doc:"create a self-signed certificate for names, only when cert or key is missing; an existing one is never replaced"`
	Names       []string `hcl:"names,optional" doc:"DNS names or IPs the certificate must cover (the placeholder's names); a wildcard certificate covers a name under it, and \"*.example.com\" asks for that wildcard itself"`
	MinDays     int      `hcl:"min_days,optional" doc:"refuse a certificate that expires within this many days (default 0: refuse only an expired one)"`

	Mode    string `hcl:"mode,optional" doc:"octal mode of cert and chain (default \"0644\")"`
	KeyMode string `hcl:"key_mode,optional" doc:"octal mode of key (default \"0600\")"`
	Owner   string `hcl:"owner,optional" doc:"owner of the files (name or uid); default: keep an existing file's owner"`
	Group   string `hcl:"group,optional" doc:"group of the files (name or gid); default: keep an existing file's group"`

	ReloadCommand   string `hcl:"reload_command,optional" doc:"command run on the host when the certificate changed, e.g. \"nginx -s reload\""`
	ReloadContainer string `hcl:"reload_container,optional" doc:"container sent reload_signal when the certificate changed (docker kill --signal)"`
	ReloadSignal    string `hcl:"reload_signal,optional" doc:"signal for reload_container (default \"HUP\")"`
	ReloadService   string `hcl:"reload_service,optional" doc:"swarm service restarted with docker service update --force when the certificate changed (run on a manager)"`

	Verify        string `hcl:"verify,optional" doc:"address the host serves TLS on, dialled from the host through its SSH connection, e.g. \"127.0.0.1:443\"; after a reload the served leaf must be the new certificate"`
	VerifyName    string `hcl:"verify_name,optional" doc:"SNI name for verify (default: the first of names, else the certificate's first DNS name)"`
	VerifyTimeout string `hcl:"verify_timeout,optional" doc:"how long verify waits for the new certificate before putting the previous one back (default \"30s\")"`

	plan   *certPlan
	output map[string]any
}

// placeholderDays is how long a placeholder certificate is valid.
const placeholderDays = 90

// certFile is one of the files the module installs.
type certFile struct {
	Path string
	Data []byte
	Mode uint32
	st   remoteFile
}

// remoteFile is what the check script learnt of a remote file.
type remoteFile struct {
	Exists bool
	Perm   uint32
	UID    string
	GID    string
	User   string
	Group  string
	SHA256 string
}

// certPlan is what Check found and Apply does.
type certPlan struct {
	files   []*certFile
	before  certBefore
	changed bool // the certificate (fingerprint) changes, so reload
}

// certBefore is the before-state of a cert_reload change: enough for
// Rollback, which has only this, to reload and verify the old certificate.
type certBefore struct {
	Files          []string    `json:"files"`
	Existed        bool        `json:"existed"`
	OldFingerprint string      `json:"old_fingerprint,omitempty"`
	OldNotAfter    string      `json:"old_not_after,omitempty"`
	NewFingerprint string      `json:"new_fingerprint"`
	NewNotAfter    string      `json:"new_not_after"`
	Reload         certReload  `json:"reload"`
	Verify         *certVerify `json:"verify,omitempty"`
}

type certReload struct {
	Command   string `json:"command,omitempty"`
	Container string `json:"container,omitempty"`
	Signal    string `json:"signal,omitempty"`
	Service   string `json:"service,omitempty"`
}

type certVerify struct {
	Addr    string `json:"addr"`
	Name    string `json:"name,omitempty"`
	Timeout string `json:"timeout"`
}

// Validate implements modules.Validator. Local sources are read and
// validated here too, so a bad certificate is reported before any host is
// touched.
func (m *CertReload) Validate() error {
	for arg, p := range map[string]string{"cert": m.Cert, "key": m.Key} {
		if !path.IsAbs(p) {
			return modules.ArgErrorf(arg, "%q is not an absolute path", p)
		}
	}
	if m.Chain != "" && !path.IsAbs(m.Chain) {
		return modules.ArgErrorf("chain", "%q is not an absolute path", m.Chain)
	}
	if m.Cert == m.Key || m.Chain != "" && (m.Chain == m.Cert || m.Chain == m.Key) {
		return modules.ArgErrorf("key", "cert, key and chain must be different files")
	}
	switch {
	case m.Placeholder && (m.SrcCert != "" || m.SrcKey != "" || m.SrcChain != "" || m.RemoteSrc):
		return modules.ArgErrorf("placeholder", "placeholder creates its own certificate: set no src_cert, src_key, src_chain or remote_src")
	case m.Placeholder && len(m.Names) == 0:
		return modules.ArgErrorf("names", "a placeholder needs the names it is for")
	case !m.Placeholder && m.SrcCert == "":
		return modules.ArgErrorf("src_cert", "src_cert and src_key are required (or placeholder = true)")
	case !m.Placeholder && m.SrcKey == "":
		return modules.ArgErrorf("src_key", "src_key is required with src_cert")
	}
	if m.MinDays < 0 {
		return modules.ArgErrorf("min_days", "must not be negative")
	}
	if m.Placeholder && m.MinDays >= placeholderDays {
		return modules.ArgErrorf("min_days", "a placeholder is valid for %d days, less than min_days %d", placeholderDays, m.MinDays)
	}
	for arg, v := range map[string]string{"mode": m.Mode, "key_mode": m.KeyMode} {
		if _, err := parseMode(v, 0); err != nil {
			return modules.ArgErrorf(arg, "%v", err)
		}
	}
	n := 0
	for _, s := range []string{m.ReloadCommand, m.ReloadContainer, m.ReloadService} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return modules.ArgErrorf("reload_command", "set one of reload_command, reload_container and reload_service")
	}
	if m.ReloadSignal != "" && m.ReloadContainer == "" {
		return modules.ArgErrorf("reload_signal", "reload_signal needs reload_container")
	}
	if m.ReloadSignal != "" && strings.Trim(m.ReloadSignal, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
		return modules.ArgErrorf("reload_signal", "%q is not a signal name such as HUP", m.ReloadSignal)
	}
	if m.Verify != "" {
		if _, _, err := net.SplitHostPort(m.Verify); err != nil {
			return modules.ArgErrorf("verify", "%q is not host:port: %v", m.Verify, err)
		}
	}
	if m.VerifyName != "" && m.Verify == "" {
		return modules.ArgErrorf("verify_name", "verify_name needs verify")
	}
	if _, err := m.verifyTimeout(); err != nil {
		return modules.ArgErrorf("verify_timeout", "%v", err)
	}
	if !m.Placeholder && !m.RemoteSrc {
		src, err := m.readLocal()
		if err != nil {
			return err
		}
		if _, err := m.validate(src, time.Now()); err != nil {
			return modules.ArgErrorf("src_cert", "%v", err)
		}
	}
	return nil
}

func (m *CertReload) verifyTimeout() (time.Duration, error) {
	if m.VerifyTimeout == "" {
		return 30 * time.Second, nil
	}
	d, err := time.ParseDuration(m.VerifyTimeout)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as \"30s\"", m.VerifyTimeout)
	}
	return d, nil
}

// Check implements modules.Module: one round trip reads the installed files'
// state and the installed certificate; remote sources take one more each.
func (m *CertReload) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	paths := []string{m.Cert, m.Key}
	if m.Chain != "" {
		paths = append(paths, m.Chain)
	}
	sts, curCert, err := readInstalled(ctx, c, paths)
	if err != nil {
		return nil, fmt.Errorf("cert_reload %s: %w", m.Cert, err)
	}
	var old *x509.Certificate
	if cs, err := parseCerts(curCert, m.Cert); err == nil {
		old = cs[0]
	}
	now := time.Now()
	var in *certInput
	switch {
	case m.Placeholder:
		if sts[0].Exists && sts[1].Exists {
			m.output = certOutput(old, false, false)
			return nil, nil
		}
		if in, err = m.placeholder(now); err != nil {
			return nil, fmt.Errorf("cert_reload %s: placeholder: %w", m.Cert, err)
		}
	default:
		var src certSource
		if m.RemoteSrc {
			src, err = readRemote(ctx, c, m.SrcCert, m.SrcKey, m.SrcChain)
		} else {
			src, err = m.readLocal()
		}
		if err != nil {
			return nil, fmt.Errorf("cert_reload %s: %w", m.Cert, err)
		}
		if in, err = m.validate(src, now); err != nil {
			return nil, fmt.Errorf("cert_reload %s: refused, nothing changed: %w", m.Cert, err)
		}
	}

	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: in.leaf.Raw})
	var chainPEM []byte
	for _, ch := range in.chain {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ch.Raw})...)
	}
	mode, _ := parseMode(m.Mode, 0o644)
	keyMode, _ := parseMode(m.KeyMode, 0o600)
	files := []*certFile{{Path: m.Cert, Mode: mode}, {Path: m.Key, Data: in.key, Mode: keyMode}}
	if m.Chain != "" {
		files[0].Data = leafPEM
		files = append(files, &certFile{Path: m.Chain, Data: chainPEM, Mode: mode})
	} else {
		files[0].Data = append(leafPEM, chainPEM...)
	}
	var what []string
	for i, f := range files {
		f.st = sts[i]
		if !f.st.Exists || f.st.SHA256 != sha256Hex(f.Data) {
			what = append(what, path.Base(f.Path))
			continue
		}
		if f.st.Perm != f.Mode || !idMatches(m.Owner, f.st.UID, f.st.User) || !idMatches(m.Group, f.st.GID, f.st.Group) {
			what = append(what, path.Base(f.Path)+" mode/owner")
		}
	}
	newFP := Fingerprint(in.leaf)
	m.output = certOutput(in.leaf, false, false)
	if len(what) == 0 {
		return nil, nil
	}

	wait, _ := m.verifyTimeout()
	b := certBefore{
		Existed:        sts[0].Exists,
		NewFingerprint: newFP,
		NewNotAfter:    in.leaf.NotAfter.UTC().Format(time.RFC3339),
		Reload:         certReload{Command: m.ReloadCommand, Container: m.ReloadContainer, Signal: m.signal(), Service: m.ReloadService},
	}
	if m.Verify != "" {
		b.Verify = &certVerify{Addr: m.Verify, Name: m.verifyName(in.leaf), Timeout: wait.String()}
	}
	if old != nil {
		b.OldFingerprint = Fingerprint(old)
		b.OldNotAfter = old.NotAfter.UTC().Format(time.RFC3339)
	}
	for _, f := range files {
		b.Files = append(b.Files, f.Path)
	}
	m.plan = &certPlan{files: files, before: b, changed: b.OldFingerprint != newFP}

	ch := &modules.Change{Files: b.Files, Sensitive: true}
	switch {
	case !m.plan.changed:
		ch.Summary = fmt.Sprintf("update %s (%s), certificate unchanged: %s", m.Cert, strings.Join(what, ", "), short(newFP))
	case old == nil && sts[0].Exists:
		ch.Summary = fmt.Sprintf("replace unreadable %s with %s (expires %s)", m.Cert, short(newFP), b.NewNotAfter)
	case old == nil:
		ch.Summary = fmt.Sprintf("install %s: %s (expires %s)", m.Cert, short(newFP), b.NewNotAfter)
	default:
		ch.Summary = fmt.Sprintf("replace %s: %s (expires %s) → %s (expires %s)", m.Cert,
			short(b.OldFingerprint), b.OldNotAfter, short(newFP), b.NewNotAfter)
	}
	if m.plan.changed && m.reloads() {
		ch.Summary += ", reload"
	}
	ch.Diff = &modules.Diff{Label: m.Cert, Before: certText(old, sts[0].Exists), After: certText(in.leaf, true)}
	if err := ch.SetBefore(b); err != nil {
		return nil, err
	}
	return ch, nil
}

// Apply implements modules.Module: keep the previous files beside the new
// ones, install atomically, reload, verify; on a failed reload or verify
// put the previous files back and reload again.
func (m *CertReload) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	p := m.plan
	if p == nil {
		return errors.New("cert_reload: Apply without Check")
	}
	tag := randomHex()
	prev := func(f *certFile) string { return path.Join(path.Dir(f.Path), ".iklim-prev-"+tag+"-"+path.Base(f.Path)) }
	var keep, install strings.Builder
	for _, f := range p.files {
		if f.st.Exists {
			fmt.Fprintf(&keep, "cp -p -- %s %s || exit 1\n", q(f.Path), q(prev(f)))
		}
	}
	if keep.Len() > 0 {
		if err := run(ctx, c, "keep the previous certificate", "umask 077\n"+keep.String()); err != nil {
			return fmt.Errorf("cert_reload %s: %w", m.Cert, err)
		}
	}
	putBack := func() error {
		var b strings.Builder
		for _, f := range p.files {
			if f.st.Exists {
				fmt.Fprintf(&b, "mv -f -- %s %s || exit 1\n", q(prev(f)), q(f.Path))
			} else {
				fmt.Fprintf(&b, "rm -f -- %s || exit 1\n", q(f.Path))
			}
		}
		return run(ctx, c, "put the previous certificate back", b.String())
	}
	cleanup := func() {
		var b strings.Builder
		for _, f := range p.files {
			if f.st.Exists {
				fmt.Fprintf(&b, "rm -f -- %s\n", q(prev(f)))
			}
		}
		if b.Len() > 0 {
			_ = run(ctx, c, "remove the previous copies", b.String())
		}
	}

	for _, f := range p.files {
		if f.st.Exists && f.st.SHA256 == sha256Hex(f.Data) {
			continue
		}
		if err := c.Upload(ctx, f.Path, strings.NewReader(string(f.Data)), fs.FileMode(f.Mode&0o777)); err != nil {
			err = fmt.Errorf("cert_reload %s: install %s: %w", m.Cert, f.Path, err)
			return errors.Join(err, putBack())
		}
	}
	for _, f := range p.files {
		owner, group := m.Owner, m.Group
		if f.st.Exists {
			if owner == "" {
				owner = f.st.UID
			}
			if group == "" {
				group = f.st.GID
			}
		}
		install.WriteString(attrScript(f.Path, owner, group, f.Mode))
	}
	if err := run(ctx, c, "set owner and mode", install.String()); err != nil {
		return errors.Join(fmt.Errorf("cert_reload %s: %w", m.Cert, err), putBack())
	}
	if !p.changed {
		cleanup()
		m.output = certOutput(nil, true, false)
		m.output["fingerprint"] = p.before.NewFingerprint
		return nil
	}

	fail := func(why error) error {
		errs := []error{fmt.Errorf("cert_reload %s: %w; the previous certificate was put back", m.Cert, why)}
		if err := putBack(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if p.before.Existed {
			if err := reload(ctx, c, p.before.Reload); err != nil {
				errs = append(errs, fmt.Errorf("reload after putting back: %w", err))
			}
		}
		return errors.Join(errs...)
	}
	if err := reload(ctx, c, p.before.Reload); err != nil {
		return fail(err)
	}
	if v := p.before.Verify; v != nil {
		if err := verifyServed(ctx, c, v, p.before.NewFingerprint); err != nil {
			return fail(err)
		}
	}
	cleanup()
	m.output = map[string]any{
		"changed": true, "reloaded": m.reloads(), "fingerprint": p.before.NewFingerprint,
		"not_after": p.before.NewNotAfter, "previous_fingerprint": p.before.OldFingerprint,
	}
	return nil
}

// Rollback implements modules.Rollbacker. The runner has already restored
// the files; when the certificate had changed, reload and verify that the
// previous one is served again. When there was no previous certificate the
// server is not reloaded: its configuration would name missing files.
func (m *CertReload) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b certBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return fmt.Errorf("cert_reload: %w", err)
	}
	if b.OldFingerprint == b.NewFingerprint || !b.Existed {
		return nil
	}
	if err := reload(ctx, c, b.Reload); err != nil {
		return fmt.Errorf("cert_reload rollback: %w", err)
	}
	if b.Verify != nil && b.OldFingerprint != "" {
		if err := verifyServed(ctx, c, b.Verify, b.OldFingerprint); err != nil {
			return fmt.Errorf("cert_reload rollback: %w", err)
		}
	}
	return nil
}

// Output implements modules.Outputter: fingerprint, not_after, changed.
func (m *CertReload) Output() map[string]any {
	if m.output == nil {
		return map[string]any{"changed": false}
	}
	return m.output
}

// CheckAhead implements modules.CheckAheader: Check reads the host with one
// Conn.Run, so it may share a round trip with its neighbours' checks, unless
// the sources are read from the host with Download.
func (m *CertReload) CheckAhead() modules.CheckAhead {
	if m.RemoteSrc {
		return modules.CheckAheadNever
	}
	return modules.CheckAheadReadOnly
}

// certSource is the PEM input, before validation.
type certSource struct{ cert, key, chain []byte }

func (m *CertReload) readLocal() (certSource, error) {
	var s certSource
	var err error
	if s.cert, err = os.ReadFile(m.SrcCert); err != nil {
		return s, modules.ArgErrorf("src_cert", "%v", err)
	}
	if s.key, err = os.ReadFile(m.SrcKey); err != nil {
		return s, modules.ArgErrorf("src_key", "%v", err)
	}
	if m.SrcChain != "" {
		if s.chain, err = os.ReadFile(m.SrcChain); err != nil {
			return s, modules.ArgErrorf("src_chain", "%v", err)
		}
	}
	return s, nil
}

// certInput is validated input: the leaf, its chain, the key's PEM.
type certInput struct {
	leaf  *x509.Certificate
	chain []*x509.Certificate
	key   []byte
}

// validate parses and checks src: PEM, key match, chain order, names,
// expiry. Nothing it says ever holds the key.
func (m *CertReload) validate(src certSource, now time.Time) (*certInput, error) {
	certs, err := parseCerts(src.cert, "src_cert")
	if err != nil {
		return nil, err
	}
	if len(src.chain) > 0 {
		more, err := parseCerts(src.chain, "src_chain")
		if err != nil {
			return nil, err
		}
		certs = append(certs, more...)
	}
	keyBlock, err := keyPEM(src.key)
	if err != nil {
		return nil, err
	}
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw})
	if _, err := tls.X509KeyPair(leafPEM, keyBlock); err != nil {
		return nil, fmt.Errorf("the key does not match the certificate %s: %w", describe(certs[0]), err)
	}
	for i := 0; i+1 < len(certs); i++ {
		if err := certs[i].CheckSignatureFrom(certs[i+1]); err != nil {
			return nil, fmt.Errorf("chain out of order: certificate %d (%s) is not signed by certificate %d (%s): %w",
				i+1, certs[i].Subject, i+2, certs[i+1].Subject, err)
		}
	}
	for i, c := range certs {
		if now.After(c.NotAfter) {
			return nil, fmt.Errorf("certificate %d (%s) expired on %s", i+1, c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
		}
		if now.Before(c.NotBefore) {
			return nil, fmt.Errorf("certificate %d (%s) is not valid before %s", i+1, c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	if m.MinDays > 0 && certs[0].NotAfter.Before(now.Add(time.Duration(m.MinDays)*24*time.Hour)) {
		return nil, fmt.Errorf("certificate %s expires on %s, within min_days %d", describe(certs[0]),
			certs[0].NotAfter.UTC().Format(time.RFC3339), m.MinDays)
	}
	for _, n := range m.Names {
		if strings.HasPrefix(n, "*.") && slices.Contains(certs[0].DNSNames, n) {
			continue // a wildcard asked for by name
		}
		if err := certs[0].VerifyHostname(n); err != nil {
			return nil, fmt.Errorf("certificate %s does not cover %q (it covers %s)", describe(certs[0]), n, strings.Join(covered(certs[0]), ", "))
		}
	}
	return &certInput{leaf: certs[0], chain: certs[1:], key: keyBlock}, nil
}

func parseCerts(data []byte, what string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: unexpected PEM block %q", what, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", what, len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate found", what)
	}
	return out, nil
}

// keyPEM returns the one private key block of data, re-encoded; errors never
// quote the data.
func keyPEM(data []byte) ([]byte, error) {
	b, _ := pem.Decode(data)
	if b == nil || !strings.HasSuffix(b.Type, "PRIVATE KEY") {
		return nil, errors.New("src_key: no PEM private key found")
	}
	return pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: b.Bytes}), nil
}

// Fingerprint is the SHA-256 of a certificate's DER, as "sha256:hex".
func Fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(s[:])
}

func describe(c *x509.Certificate) string {
	return fmt.Sprintf("%q (%s)", c.Subject.CommonName, Fingerprint(c)[:19])
}

func covered(c *x509.Certificate) []string {
	out := append([]string{}, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	if len(out) == 0 {
		out = []string{"no names"}
	}
	return out
}

// placeholder makes a self-signed certificate and key for m.Names.
func (m *CertReload) placeholder(now time.Time) (*certInput, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: m.Names[0], Organization: []string{"iklim placeholder"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(placeholderDays * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range m.Names {
		if ip := net.ParseIP(n); ip != nil {
			tpl.IPAddresses = append(tpl.IPAddresses, ip)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &certInput{leaf: leaf, key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}, nil
}

func (m *CertReload) signal() string {
	if m.ReloadContainer == "" {
		return ""
	}
	if m.ReloadSignal == "" {
		return "HUP"
	}
	return m.ReloadSignal
}

func (m *CertReload) reloads() bool {
	return m.ReloadCommand != "" || m.ReloadContainer != "" || m.ReloadService != ""
}

func (m *CertReload) verifyName(leaf *x509.Certificate) string {
	switch {
	case m.VerifyName != "":
		return m.VerifyName
	case len(m.Names) > 0:
		return strings.Replace(m.Names[0], "*.", "iklim-verify.", 1)
	case len(leaf.DNSNames) > 0:
		return strings.Replace(leaf.DNSNames[0], "*.", "iklim-verify.", 1)
	}
	return ""
}

func certOutput(c *x509.Certificate, changed, reloaded bool) map[string]any {
	out := map[string]any{"changed": changed, "reloaded": reloaded}
	if c != nil {
		out["fingerprint"] = Fingerprint(c)
		out["not_after"] = c.NotAfter.UTC().Format(time.RFC3339)
	}
	return out
}

// certText is a certificate as diff mode shows it: never the key.
func certText(c *x509.Certificate, exists bool) string {
	switch {
	case c == nil && exists:
		return "(not a readable certificate)\n"
	case c == nil:
		return "(absent)\n"
	}
	return fmt.Sprintf("fingerprint: %s\nsubject: %s\nnames: %s\nnot_after: %s\n", Fingerprint(c), c.Subject,
		strings.Join(covered(c), ", "), c.NotAfter.UTC().Format(time.RFC3339))
}

func short(fp string) string {
	if len(fp) > 23 {
		return fp[:23] + "…"
	}
	return fp
}

// reload runs what r says on the host.
func reload(ctx context.Context, c modules.Conn, r certReload) error {
	var cmd string
	switch {
	case r.Command != "":
		cmd = r.Command
	case r.Container != "":
		cmd = "docker kill --signal=" + r.Signal + " " + q(r.Container) + " >/dev/null"
	case r.Service != "":
		cmd = "docker service update --force --quiet " + q(r.Service) + " >/dev/null"
	default:
		return nil
	}
	return run(ctx, c, "reload", cmd)
}

// verifyServed does TLS handshakes to v.Addr from the host's side until the
// served leaf is want, or v.Timeout passes.
func verifyServed(ctx context.Context, c modules.Conn, v *certVerify, want string) error {
	d, ok := c.(modules.Dialer)
	if !ok {
		return fmt.Errorf("verify %s: the connection to %s cannot dial", v.Addr, c.Host())
	}
	wait, err := time.ParseDuration(v.Timeout)
	if err != nil {
		return fmt.Errorf("verify %s: %w", v.Addr, err)
	}
	start := time.Now()
	deadline := start.Add(wait)
	var last string
	// nginx's old workers may still take a connection for a moment after
	// a reload: the new certificate counts once servedInARow connections
	// in a row get it.
	const servedInARow = 3
	good := 0
	for {
		fp, err := servedFingerprint(ctx, d, v.Addr, v.Name)
		switch {
		case err == nil && fp == want:
			if good++; good == servedInARow {
				return nil
			}
		case err != nil:
			good, last = 0, err.Error()
		default:
			good, last = 0, "it served "+fp
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("verify %s (SNI %q): %s not served within %s; last: %s", v.Addr, v.Name, want, wait, last)
		}
		modules.ReportStatus(c, modules.Status{Text: "waiting for " + v.Addr + " to serve the new certificate: " + last, Since: start, Max: wait})
		pause := 250 * time.Millisecond
		if good > 0 {
			pause = 50 * time.Millisecond
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("verify %s: %w", v.Addr, ctx.Err())
		case <-t.C:
		}
	}
}

// ServedFingerprint does one TLS handshake to addr through d with SNI name
// and returns the served leaf's fingerprint. The chain is not trusted or
// checked: only its identity matters here.
func ServedFingerprint(ctx context.Context, d modules.Dialer, addr, name string) (string, error) {
	return servedFingerprint(ctx, d, addr, name)
}

func servedFingerprint(ctx context.Context, d modules.Dialer, addr, name string) (string, error) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nc, err := d.Dial(hctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	tc := tls.Client(nc, &tls.Config{ServerName: name, InsecureSkipVerify: true}) //nolint:gosec // compared by fingerprint
	if err := tc.HandshakeContext(hctx); err != nil {
		return "", fmt.Errorf("tls handshake: %w", err)
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("no certificate served")
	}
	return Fingerprint(certs[0]), nil
}

// readInstalled reads, in one round trip, the state of every path and the
// content of the first (the certificate). A missing parent directory fails.
func readInstalled(ctx context.Context, c modules.Conn, paths []string) ([]remoteFile, []byte, error) {
	var b strings.Builder
	b.WriteString(`_f() {
if [ -L "$1" ] || { [ -e "$1" ] && [ ! -f "$1" ]; }; then echo "$1 is not a regular file" >&2; exit 3; fi
if [ -f "$1" ]; then
s=$(stat -c '%a:%u:%g:%U:%G' -- "$1") || exit 3
h=$(sha256sum < "$1") || exit 3
echo "F $s ${h%% *}"
else
[ -d "$(dirname -- "$1")" ] || { echo "directory of $1 does not exist" >&2; exit 3; }
echo "F absent"
fi
}
`)
	for _, p := range paths {
		b.WriteString("_f " + q(p) + "\n")
	}
	fmt.Fprintf(&b, "[ -f %s ] && cat -- %s\nexit 0\n", q(paths[0]), q(paths[0]))
	res, err := c.Run(ctx, b.String())
	if err != nil {
		return nil, nil, err
	}
	if err := res.Err("read installed certificate"); err != nil {
		return nil, nil, err
	}
	out := res.Stdout
	sts := make([]remoteFile, len(paths))
	for i := range paths {
		line, rest, ok := strings.Cut(out, "\n")
		if !ok || !strings.HasPrefix(line, "F ") {
			return nil, nil, fmt.Errorf("unexpected check output %q", line)
		}
		out = rest
		f := strings.Fields(line)
		if f[1] == "absent" {
			continue
		}
		a := strings.Split(f[1], ":")
		if len(f) != 3 || len(a) != 5 {
			return nil, nil, fmt.Errorf("unexpected check output %q", line)
		}
		perm, err := strconv.ParseUint(a[0], 8, 32)
		if err != nil {
			return nil, nil, fmt.Errorf("unexpected check output %q", line)
		}
		sts[i] = remoteFile{Exists: true, Perm: uint32(perm), UID: a[1], GID: a[2], User: a[3], Group: a[4], SHA256: f[2]}
	}
	return sts, []byte(out), nil
}

// readRemote reads the source files on the host.
func readRemote(ctx context.Context, c modules.Conn, cert, key, chain string) (certSource, error) {
	var s certSource
	get := func(p, arg string) ([]byte, error) {
		var b strings.Builder
		if err := c.Download(ctx, p, &b); err != nil {
			return nil, fmt.Errorf("%s: %w", arg, err)
		}
		return []byte(b.String()), nil
	}
	var err error
	if s.cert, err = get(cert, "src_cert"); err != nil {
		return s, err
	}
	if s.key, err = get(key, "src_key"); err != nil {
		return s, err
	}
	if chain != "" {
		if s.chain, err = get(chain, "src_chain"); err != nil {
			return s, err
		}
	}
	return s, nil
}

// attrScript sets owner, group (when given) and mode of p; chown first, as
// it clears setuid bits.
func attrScript(p, owner, group string, mode uint32) string {
	var s string
	switch {
	case owner != "" && group != "":
		s = "chown -- " + q(owner+":"+group) + " " + q(p) + " || exit 1\n"
	case owner != "":
		s = "chown -- " + q(owner) + " " + q(p) + " || exit 1\n"
	case group != "":
		s = "chgrp -- " + q(group) + " " + q(p) + " || exit 1\n"
	}
	return s + fmt.Sprintf("chmod -- %04o %s || exit 1\n", mode, q(p))
}
