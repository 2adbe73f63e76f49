package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
)

// DNSRecord sets DNS record sets in one zone, through GoDaddy's REST API or
// an RFC 2136 dynamic update signed with TSIG. It reads the current sets,
// changes only those that differ, and after an update queries (the API, or
// the authoritative server) until the answer matches.
//
// It speaks to the provider from the control machine's process, never from
// the host: run it with delegate = true (and run_once = true), so that the
// change is recorded in the control machine's backup root. Its before-state
// holds the credentials, which the recorder seals because the module marks
// them sensitive.
type DNSRecord struct {
	modules.RunSecrets // the credentials join them

	Provider string `hcl:"provider" doc:"\"godaddy\" (REST API) or \"rfc2136\" (dynamic update with TSIG)"`
	Zone     string `hcl:"zone" doc:"the zone (GoDaddy: the domain), e.g. \"iklim.co\""`

	Names  []string          `hcl:"names,optional" doc:"record names relative to zone (\"@\" for the apex) that all get type, values and ttl; for sets that differ, use record \"NAME\" { type, values, ttl } blocks"`
	Type   string            `hcl:"type,optional" doc:"record type for names: A, AAAA, CNAME or TXT (default \"A\")"`
	Values []string          `hcl:"values,optional" doc:"the record set's values for names, e.g. the floating IP"`
	TTL    int               `hcl:"ttl,optional" doc:"TTL in seconds for names and for record blocks without one (default 600, GoDaddy's minimum)"`
	Record []*DNSRecordBlock `hcl:"record,block"`

	APIKey    string `hcl:"api_key,optional" sensitive:"true" doc:"GoDaddy API key"`
	APISecret string `hcl:"api_secret,optional" sensitive:"true" doc:"GoDaddy API secret"`
	APIURL    string `hcl:"api_url,optional" doc:"GoDaddy API base URL (default \"https://api.godaddy.com\"; \"https://api.ote-godaddy.com\" for OTE)"`

	Server        string `hcl:"server,optional" doc:"rfc2136: the authoritative server, host:port (default port 53)"`
	TSIGName      string `hcl:"tsig_name,optional" doc:"rfc2136: TSIG key name, as in the server's key statement"`
	TSIGSecret    string `hcl:"tsig_secret,optional" sensitive:"true" doc:"rfc2136: TSIG secret, base64 (tsig-keygen prints it)"`
	TSIGAlgorithm string `hcl:"tsig_algorithm,optional" doc:"rfc2136: hmac-sha256 (default), hmac-sha512, hmac-sha1 or hmac-md5"`

	VerifyTimeout string `hcl:"verify_timeout,optional" doc:"how long to wait, after an update, for the answer to match (default \"60s\")"`

	plan   []recordPlan
	output map[string]any
}

// DNSRecordBlock is one record block: record "api" { type = "A"  values = [...] }.
type DNSRecordBlock struct {
	Name   string   `hcl:"name,label"`
	Type   string   `hcl:"type,optional"`
	Values []string `hcl:"values"`
	TTL    int      `hcl:"ttl,optional"`
}

// rrset is one record set's TTL and values (sorted, normalised).
type rrset struct {
	TTL    int      `json:"ttl"`
	Values []string `json:"values"`
}

func (r rrset) equal(o rrset) bool { return r.TTL == o.TTL && slices.Equal(r.Values, o.Values) }

// recordKey names a record set in the zone.
type recordKey struct {
	Name string `json:"name"` // relative to the zone, "@" for the apex
	Type string `json:"type"`
}

// recordPlan is one record set: what it was and what it should be.
type recordPlan struct {
	recordKey
	Existed bool   `json:"existed"`
	Old     rrset  `json:"old"`
	New     rrset  `json:"new"`
	change  string // create, update or "" (as wanted)
}

// dnsProvider reads and writes record sets.
type dnsProvider interface {
	// Get returns the record set, or ok=false when there is none.
	Get(ctx context.Context, k recordKey) (set rrset, ok bool, err error)
	Set(ctx context.Context, k recordKey, set rrset) error
	Delete(ctx context.Context, k recordKey) error
}

// dnsConfig is the provider configuration, as the before-state keeps it for
// Rollback (sealed by the recorder: it holds secrets).
type dnsConfig struct {
	Provider      string `json:"provider"`
	Zone          string `json:"zone"`
	APIKey        string `json:"api_key,omitempty"`
	APISecret     string `json:"api_secret,omitempty"`
	APIURL        string `json:"api_url,omitempty"`
	Server        string `json:"server,omitempty"`
	TSIGName      string `json:"tsig_name,omitempty"`
	TSIGSecret    string `json:"tsig_secret,omitempty"`
	TSIGAlgorithm string `json:"tsig_algorithm,omitempty"`
	VerifyTimeout string `json:"verify_timeout"`
}

// dnsBefore is the before-state of a dns_record change.
type dnsBefore struct {
	Config  dnsConfig    `json:"config"`
	Records []recordPlan `json:"records"`
}

// Validate implements modules.Validator.
func (m *DNSRecord) Validate() error {
	if m.Zone == "" || strings.ContainsAny(m.Zone, " /") {
		return modules.ArgErrorf("zone", "%q is not a zone name", m.Zone)
	}
	switch m.Provider {
	case "godaddy":
		if m.APIKey == "" {
			return modules.ArgErrorf("api_key", "godaddy needs api_key and api_secret")
		}
		if m.APISecret == "" {
			return modules.ArgErrorf("api_secret", "godaddy needs api_key and api_secret")
		}
		if m.APIURL != "" {
			if u, err := url.Parse(m.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return modules.ArgErrorf("api_url", "%q is not an http(s) URL", m.APIURL)
			}
		}
		if m.Server != "" || m.TSIGName != "" || m.TSIGSecret != "" {
			return modules.ArgErrorf("server", "server and tsig_* are for provider rfc2136")
		}
	case "rfc2136":
		if m.Server == "" {
			return modules.ArgErrorf("server", "rfc2136 needs the authoritative server, host:port")
		}
		if _, err := serverAddr(m.Server); err != nil {
			return modules.ArgErrorf("server", "%v", err)
		}
		if (m.TSIGName == "") != (m.TSIGSecret == "") {
			return modules.ArgErrorf("tsig_secret", "set tsig_name and tsig_secret together")
		}
		if _, err := tsigAlgorithm(m.TSIGAlgorithm); err != nil {
			return modules.ArgErrorf("tsig_algorithm", "%v", err)
		}
		if m.APIKey != "" || m.APISecret != "" || m.APIURL != "" {
			return modules.ArgErrorf("api_key", "api_key, api_secret and api_url are for provider godaddy")
		}
	default:
		return modules.ArgErrorf("provider", "%q is not \"godaddy\" or \"rfc2136\"", m.Provider)
	}
	if _, err := m.verifyTimeout(); err != nil {
		return modules.ArgErrorf("verify_timeout", "%v", err)
	}
	_, err := m.wanted()
	return err
}

func (m *DNSRecord) verifyTimeout() (time.Duration, error) {
	if m.VerifyTimeout == "" {
		return 60 * time.Second, nil
	}
	d, err := time.ParseDuration(m.VerifyTimeout)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as \"60s\"", m.VerifyTimeout)
	}
	return d, nil
}

// Check implements modules.Module: one read per record set.
func (m *DNSRecord) Check(ctx context.Context, _ modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	m.MarkSensitive(m.APIKey, m.APISecret, m.TSIGSecret)
	cfg := m.config()
	p, err := cfg.provider()
	if err != nil {
		return nil, fmt.Errorf("dns_record %s: %w", cfg.Zone, err)
	}
	want, _ := m.wanted()
	var changes, before, after []string
	for i := range want {
		r := &want[i]
		cur, ok, err := p.Get(ctx, r.recordKey)
		if err != nil {
			return nil, fmt.Errorf("dns_record %s: read %s %s: %w", cfg.Zone, cfg.fqdn(r.Name), r.Type, err)
		}
		r.Existed, r.Old = ok, cur
		switch {
		case !ok:
			r.change = "create"
		case !cur.equal(r.New):
			r.change = "update"
			before = append(before, setText(cfg, r.recordKey, cur))
		default:
			continue
		}
		after = append(after, setText(cfg, r.recordKey, r.New))
		changes = append(changes, fmt.Sprintf("%s %s %s", r.change, r.Name, r.Type))
	}
	m.plan = want
	m.output = dnsOutput(want, false)
	if len(changes) == 0 {
		return nil, nil
	}
	var recs []recordPlan
	for _, r := range want {
		if r.change != "" {
			recs = append(recs, r)
		}
	}
	ch := &modules.Change{
		Summary: fmt.Sprintf("dns %s (%s): %s", cfg.Zone, cfg.Provider, strings.Join(changes, ", ")),
		Diff:    &modules.Diff{Label: "zone " + cfg.Zone, Before: strings.Join(before, ""), After: strings.Join(after, "")},
	}
	if err := ch.SetBefore(dnsBefore{Config: cfg, Records: recs}); err != nil {
		return nil, err
	}
	return ch, nil
}

// Apply implements modules.Module: write each differing set, then wait
// until every one reads back as wanted.
func (m *DNSRecord) Apply(ctx context.Context, _ modules.Conn, ch *modules.Change) error {
	var b dnsBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return fmt.Errorf("dns_record: %w", err)
	}
	p, err := b.Config.provider()
	if err != nil {
		return fmt.Errorf("dns_record %s: %w", b.Config.Zone, err)
	}
	for _, r := range b.Records {
		if err := p.Set(ctx, r.recordKey, r.New); err != nil {
			return fmt.Errorf("dns_record %s: set %s %s: %w", b.Config.Zone, b.Config.fqdn(r.Name), r.Type, err)
		}
	}
	want := map[recordKey]*rrset{}
	for _, r := range b.Records {
		want[r.recordKey] = &r.New
	}
	if err := waitRecords(ctx, p, b.Config, want); err != nil {
		return err
	}
	m.output = dnsOutput(m.plan, true)
	return nil
}

// Rollback implements modules.Rollbacker: put back the previous sets and
// delete those the change created, then wait until the answers match.
func (m *DNSRecord) Rollback(ctx context.Context, _ modules.Conn, ch *modules.Change) error {
	var b dnsBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return fmt.Errorf("dns_record: %w", err)
	}
	m.MarkSensitive(b.Config.APIKey, b.Config.APISecret, b.Config.TSIGSecret)
	p, err := b.Config.provider()
	if err != nil {
		return fmt.Errorf("dns_record %s: %w", b.Config.Zone, err)
	}
	want := map[recordKey]*rrset{}
	for i := len(b.Records) - 1; i >= 0; i-- {
		r := b.Records[i]
		if r.Existed {
			err = p.Set(ctx, r.recordKey, r.Old)
			want[r.recordKey] = &r.Old
		} else {
			err = p.Delete(ctx, r.recordKey)
			want[r.recordKey] = nil
		}
		if err != nil {
			return fmt.Errorf("dns_record %s: restore %s %s: %w", b.Config.Zone, b.Config.fqdn(r.Name), r.Type, err)
		}
	}
	return waitRecords(ctx, p, b.Config, want)
}

// Output implements modules.Outputter: records (name → values) and changed.
func (m *DNSRecord) Output() map[string]any {
	if m.output == nil {
		return map[string]any{"changed": false}
	}
	return m.output
}

// wanted lists the record sets the arguments ask for, normalised, in
// argument order.
func (m *DNSRecord) wanted() ([]recordPlan, error) {
	var out []recordPlan
	seen := map[recordKey]bool{}
	add := func(arg, name, typ string, values []string, ttl int) error {
		if typ == "" {
			typ = "A"
		}
		typ = strings.ToUpper(typ)
		if ttl == 0 {
			ttl = m.TTL
		}
		if ttl == 0 {
			ttl = 600
		}
		if ttl < 0 {
			return modules.ArgErrorf(arg, "ttl %d is negative", ttl)
		}
		if m.Provider == "godaddy" && ttl < 600 {
			return modules.ArgErrorf(arg, "ttl %d is below GoDaddy's minimum of 600", ttl)
		}
		n, err := relName(name, m.Zone)
		if err != nil {
			return modules.ArgErrorf(arg, "%v", err)
		}
		vals, err := normValues(typ, values)
		if err != nil {
			return modules.ArgErrorf(arg, "%s %s: %v", name, typ, err)
		}
		k := recordKey{Name: n, Type: typ}
		if seen[k] {
			return modules.ArgErrorf(arg, "%s %s is set twice", name, typ)
		}
		seen[k] = true
		out = append(out, recordPlan{recordKey: k, New: rrset{TTL: ttl, Values: vals}})
		return nil
	}
	if len(m.Names) > 0 && len(m.Values) == 0 {
		return nil, modules.ArgErrorf("values", "names need values")
	}
	if len(m.Names) == 0 && (len(m.Values) > 0 || m.Type != "") {
		return nil, modules.ArgErrorf("names", "values and type need names")
	}
	for _, n := range m.Names {
		if err := add("names", n, m.Type, m.Values, m.TTL); err != nil {
			return nil, err
		}
	}
	for _, r := range m.Record {
		if err := add("record", r.Name, r.Type, r.Values, r.TTL); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, modules.ArgErrorf("names", "no records: set names and values, or record blocks")
	}
	return out, nil
}

// relName makes name relative to zone: "api", "api.iklim.co" and
// "api.iklim.co." all give "api"; the apex is "@".
func relName(name, zone string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	switch {
	case n == "" || n == "@" || n == z:
		return "@", nil
	case strings.HasSuffix(n, "."+z):
		n = strings.TrimSuffix(n, "."+z)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || strings.ContainsAny(label, " /\\\"'") {
			return "", fmt.Errorf("%q is not a record name", name)
		}
	}
	return n, nil
}

// normValues checks values for typ and puts them in a canonical, sorted form
// so that sets compare equal however they were written.
func normValues(typ string, values []string) ([]string, error) {
	if len(values) == 0 {
		return nil, errors.New("no values")
	}
	out := make([]string, 0, len(values))
	for _, v := range values {
		switch typ {
		case "A", "AAAA":
			ip := net.ParseIP(strings.TrimSpace(v))
			if ip == nil || (typ == "A") != (ip.To4() != nil) {
				return nil, fmt.Errorf("%q is not an %s address", v, map[string]string{"A": "IPv4", "AAAA": "IPv6"}[typ])
			}
			out = append(out, ip.String())
		case "CNAME":
			if len(values) > 1 {
				return nil, errors.New("a CNAME has one value")
			}
			out = append(out, strings.ToLower(strings.TrimSuffix(strings.TrimSpace(v), ".")))
		case "TXT":
			out = append(out, v)
		default:
			return nil, fmt.Errorf("type %s is not A, AAAA, CNAME or TXT", typ)
		}
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

func (m *DNSRecord) config() dnsConfig {
	wait, _ := m.verifyTimeout()
	return dnsConfig{
		Provider: m.Provider, Zone: strings.TrimSuffix(m.Zone, "."),
		APIKey: m.APIKey, APISecret: m.APISecret, APIURL: m.APIURL,
		Server: m.Server, TSIGName: m.TSIGName, TSIGSecret: m.TSIGSecret, TSIGAlgorithm: m.TSIGAlgorithm,
		VerifyTimeout: wait.String(),
	}
}

func (c dnsConfig) provider() (dnsProvider, error) {
	switch c.Provider {
	case "godaddy":
		return newGoDaddy(c), nil
	case "rfc2136":
		return newRFC2136(c)
	}
	return nil, fmt.Errorf("unknown provider %q", c.Provider)
}

func (c dnsConfig) fqdn(name string) string {
	if name == "@" {
		return c.Zone + "."
	}
	return name + "." + c.Zone + "."
}

func dnsOutput(recs []recordPlan, changed bool) map[string]any {
	out := map[string]any{}
	for _, r := range recs {
		out[r.Name+" "+r.Type] = append([]string(nil), r.New.Values...)
	}
	return map[string]any{"records": out, "changed": changed}
}

func setText(c dnsConfig, k recordKey, s rrset) string {
	var b strings.Builder
	for _, v := range s.Values {
		if k.Type == "CNAME" {
			v += "."
		}
		fmt.Fprintf(&b, "%s %d IN %s %s\n", c.fqdn(k.Name), s.TTL, k.Type, v)
	}
	return b.String()
}

// waitRecords reads every set until it is as wanted (nil: absent), or the
// config's verify timeout passes.
func waitRecords(ctx context.Context, p dnsProvider, c dnsConfig, want map[recordKey]*rrset) error {
	wait, err := time.ParseDuration(c.VerifyTimeout)
	if err != nil {
		return fmt.Errorf("dns_record %s: verify_timeout: %w", c.Zone, err)
	}
	deadline := time.Now().Add(wait)
	pending := map[recordKey]*rrset{}
	for k, v := range want {
		pending[k] = v
	}
	for {
		var last string
		for k, w := range pending {
			cur, ok, err := p.Get(ctx, k)
			switch {
			case err != nil:
				last = fmt.Sprintf("%s %s: %v", c.fqdn(k.Name), k.Type, err)
			case w == nil && !ok, w != nil && ok && cur.equal(*w):
				delete(pending, k)
			default:
				last = fmt.Sprintf("%s %s answers %s", c.fqdn(k.Name), k.Type, strings.TrimSpace(setText(c, k, cur)))
				if !ok {
					last = fmt.Sprintf("%s %s has no records yet", c.fqdn(k.Name), k.Type)
				}
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dns_record %s: %d record sets not as wanted after %s; last: %s", c.Zone, len(pending), wait, last)
		}
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("dns_record %s: verify: %w", c.Zone, ctx.Err())
		case <-t.C:
		}
	}
}

// serverAddr adds the default port 53 to a server without one.
func serverAddr(s string) (string, error) {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	if strings.Contains(s, " ") || s == "" {
		return "", fmt.Errorf("%q is not host:port", s)
	}
	return net.JoinHostPort(s, strconv.Itoa(53)), nil
}
