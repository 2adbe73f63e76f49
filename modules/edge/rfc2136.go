package edge

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// rfc2136 reads record sets by querying the authoritative server and writes
// them with RFC 2136 dynamic updates signed with TSIG (RFC 8945).
type rfc2136 struct {
	server, zone string
	keyName, alg string
	secret       string
}

func newRFC2136(c dnsConfig) (*rfc2136, error) {
	addr, err := serverAddr(c.Server)
	if err != nil {
		return nil, err
	}
	alg, err := tsigAlgorithm(c.TSIGAlgorithm)
	if err != nil {
		return nil, err
	}
	r := &rfc2136{server: addr, zone: dns.Fqdn(c.Zone), alg: alg, secret: c.TSIGSecret}
	if c.TSIGName != "" {
		r.keyName = dns.Fqdn(c.TSIGName)
	}
	return r, nil
}

// tsigAlgorithm maps an algorithm argument to its DNS name.
func tsigAlgorithm(s string) (string, error) {
	switch strings.ToLower(strings.TrimSuffix(s, ".")) {
	case "", "hmac-sha256":
		return dns.HmacSHA256, nil
	case "hmac-sha512":
		return dns.HmacSHA512, nil
	case "hmac-sha1":
		return dns.HmacSHA1, nil
	case "hmac-md5", "hmac-md5.sig-alg.reg.int":
		return dns.HmacMD5, nil
	}
	return "", fmt.Errorf("%q is not hmac-sha256, hmac-sha512, hmac-sha1 or hmac-md5", s)
}

func (r *rfc2136) fqdn(name string) string {
	if name == "@" {
		return r.zone
	}
	return name + "." + r.zone
}

func (r *rfc2136) client() *dns.Client {
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
	if r.keyName != "" {
		c.TsigSecret = map[string]string{r.keyName: r.secret}
	}
	return c
}

// Get implements dnsProvider: a non-recursive query to the server, over TCP
// so that large sets are not truncated.
func (r *rfc2136) Get(ctx context.Context, k recordKey) (rrset, bool, error) {
	q := new(dns.Msg)
	q.SetQuestion(r.fqdn(k.Name), dns.StringToType[k.Type])
	q.RecursionDesired = false
	in, _, err := r.client().ExchangeContext(ctx, q, r.server)
	if err != nil {
		return rrset{}, false, fmt.Errorf("query %s: %w", r.server, err)
	}
	if in.Rcode == dns.RcodeNameError {
		return rrset{}, false, nil
	}
	if in.Rcode != dns.RcodeSuccess {
		return rrset{}, false, fmt.Errorf("query %s: %s", r.server, dns.RcodeToString[in.Rcode])
	}
	if !in.Authoritative {
		return rrset{}, false, fmt.Errorf("query %s: the answer is not authoritative: is the server the zone's primary?", r.server)
	}
	var s rrset
	var vals []string
	want := dns.StringToType[k.Type]
	for _, rr := range in.Answer {
		h := rr.Header()
		if h.Rrtype != want || !strings.EqualFold(h.Name, r.fqdn(k.Name)) {
			continue
		}
		if s.TTL == 0 || int(h.Ttl) < s.TTL {
			s.TTL = int(h.Ttl)
		}
		vals = append(vals, rrValue(rr))
	}
	if len(vals) == 0 {
		return rrset{}, false, nil
	}
	if s.Values, err = normValues(k.Type, vals); err != nil {
		sort.Strings(vals)
		s.Values = vals
	}
	return s, true, nil
}

func rrValue(rr dns.RR) string {
	switch v := rr.(type) {
	case *dns.A:
		return v.A.String()
	case *dns.AAAA:
		return v.AAAA.String()
	case *dns.CNAME:
		return v.Target
	case *dns.TXT:
		return strings.Join(v.Txt, "")
	}
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// Set implements dnsProvider: one update that deletes the set and adds the
// new records, applied by the server atomically.
func (r *rfc2136) Set(ctx context.Context, k recordKey, s rrset) error {
	var rrs []dns.RR
	for _, v := range s.Values {
		rr, err := r.newRR(k, s.TTL, v)
		if err != nil {
			return err
		}
		rrs = append(rrs, rr)
	}
	m := new(dns.Msg)
	m.SetUpdate(r.zone)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: r.fqdn(k.Name), Rrtype: dns.StringToType[k.Type], Class: dns.ClassINET}}})
	m.Insert(rrs)
	return r.update(ctx, m)
}

// Delete implements dnsProvider.
func (r *rfc2136) Delete(ctx context.Context, k recordKey) error {
	m := new(dns.Msg)
	m.SetUpdate(r.zone)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: r.fqdn(k.Name), Rrtype: dns.StringToType[k.Type], Class: dns.ClassINET}}})
	return r.update(ctx, m)
}

func (r *rfc2136) newRR(k recordKey, ttl int, v string) (dns.RR, error) {
	val := v
	switch k.Type {
	case "CNAME":
		val = dns.Fqdn(v)
	case "TXT":
		val = strconv.Quote(v)
	}
	rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", r.fqdn(k.Name), ttl, k.Type, val))
	if err != nil {
		return nil, fmt.Errorf("record %s %s %q: %w", k.Name, k.Type, v, err)
	}
	return rr, nil
}

func (r *rfc2136) update(ctx context.Context, m *dns.Msg) error {
	if r.keyName != "" {
		m.SetTsig(r.keyName, r.alg, 300, time.Now().Unix())
	}
	in, _, err := r.client().ExchangeContext(ctx, m, r.server)
	if err != nil {
		if errors.Is(err, dns.ErrAuth) || errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrSecret) || errors.Is(err, dns.ErrKeyAlg) {
			return fmt.Errorf("update %s: TSIG key %q refused%s: check tsig_name, tsig_secret and tsig_algorithm: %w",
				r.server, strings.TrimSuffix(r.keyName, "."), tsigDetail(in), err)
		}
		return fmt.Errorf("update %s: %w", r.server, err)
	}
	if in.Rcode == dns.RcodeSuccess {
		return nil
	}
	rc := dns.RcodeToString[in.Rcode]
	if t := in.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
		return fmt.Errorf("update %s: TSIG key %q refused (%s, %s): check tsig_name, tsig_secret and tsig_algorithm", r.server,
			strings.TrimSuffix(r.keyName, "."), rc, dns.RcodeToString[int(t.Error)])
	}
	switch in.Rcode {
	case dns.RcodeNotAuth:
		return fmt.Errorf("update %s: NOTAUTH: the server is not authoritative for %s, or refused the TSIG key %q", r.server, r.zone, strings.TrimSuffix(r.keyName, "."))
	case dns.RcodeRefused:
		return fmt.Errorf("update %s: REFUSED: the zone %s does not allow this update (allow-update / update-policy, or a TSIG key is needed)", r.server, r.zone)
	}
	return fmt.Errorf("update %s: %s", r.server, rc)
}

// tsigDetail is " (NOTAUTH, BADSIG)" from an answer, or "".
func tsigDetail(in *dns.Msg) string {
	if in == nil {
		return ""
	}
	d := dns.RcodeToString[in.Rcode]
	if t := in.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
		d += ", " + dns.RcodeToString[int(t.Error)]
	}
	return " (" + d + ")"
}
