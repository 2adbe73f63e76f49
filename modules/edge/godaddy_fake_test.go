package edge_test

// A FAKE GoDaddy API: GoDaddy cannot run here, so this httptest server
// follows its documented Domains v1 record endpoints instead
// (GET/PUT/DELETE /v1/domains/{domain}/records/{type}/{name}), its
// "sso-key KEY:SECRET" authorization, its status codes (401 unauthenticated,
// 404 unknown domain, 422 invalid body, 429 rate limited with Retry-After and
// retryAfterSec) and its error body {code, message, fields}.

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/modules/edge"
	"github.com/iklimco/iklim/runner/transport"
)

type fakeRecord struct {
	Data string `json:"data"`
	Name string `json:"name"`
	TTL  int    `json:"ttl"`
	Type string `json:"type"`
}

type fakeGoDaddy struct {
	*httptest.Server
	key, secret, domain string

	mu      sync.Mutex
	records map[string][]fakeRecord // "TYPE name" → records
	limit   int                     // answer the next limit requests with 429
	limited []time.Time             // when 429s were sent
	retried []time.Time             // when requests after a 429 came
	puts    int
}

func newFakeGoDaddy(t *testing.T) *fakeGoDaddy {
	f := &fakeGoDaddy{key: "fake-key-123456", secret: "fake-secret-abcdef", domain: "iklim.test", records: map[string][]fakeRecord{
		"A grafana": {{Data: "192.0.2.50", Name: "grafana", TTL: 600, Type: "A"}},
		"CNAME www": {{Data: "iklim.test", Name: "www", TTL: 3600, Type: "CNAME"}},
	}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func fakeErr(w http.ResponseWriter, status int, body map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (f *fakeGoDaddy) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.limited) > len(f.retried) {
		f.retried = append(f.retried, time.Now())
	}
	if f.limit > 0 {
		f.limit--
		f.limited = append(f.limited, time.Now())
		w.Header().Set("Retry-After", "1")
		fakeErr(w, http.StatusTooManyRequests, map[string]any{"code": "TOO_MANY_REQUESTS", "message": "Too many requests received within interval", "retryAfterSec": 1})
		return
	}
	if r.Header.Get("Authorization") != "sso-key "+f.key+":"+f.secret {
		fakeErr(w, http.StatusUnauthorized, map[string]any{"code": "UNABLE_TO_AUTHENTICATE", "message": "Unauthorized : Could not authenticate API key/secret"})
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/domains/"), "/")
	if len(parts) != 4 || parts[1] != "records" {
		fakeErr(w, http.StatusNotFound, map[string]any{"code": "NOT_FOUND", "message": "no such endpoint"})
		return
	}
	domain, typ, name := parts[0], parts[2], parts[3]
	if domain != f.domain {
		fakeErr(w, http.StatusNotFound, map[string]any{"code": "UNKNOWN_DOMAIN", "message": "The given domain is not registered, or does not have a zone file"})
		return
	}
	k := typ + " " + name
	switch r.Method {
	case http.MethodGet:
		recs := f.records[k]
		if recs == nil {
			recs = []fakeRecord{}
		}
		_ = json.NewEncoder(w).Encode(recs)
	case http.MethodPut:
		var in []fakeRecord
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			fakeErr(w, http.StatusUnprocessableEntity, map[string]any{"code": "INVALID_BODY", "message": "Request body doesn't fulfill schema: " + err.Error()})
			return
		}
		var fields []map[string]string
		if typ != "CNAME" && f.records["CNAME "+name] != nil {
			fields = append(fields, map[string]string{"code": "DUPLICATE_RECORD", "path": "records", "message": "a CNAME exists for " + name})
		}
		for i, rec := range in {
			if rec.TTL < 600 {
				fields = append(fields, map[string]string{"code": "MIN_VALUE", "path": "records[" + string(rune('0'+i)) + "].ttl", "message": "ttl must be at least 600"})
			}
			if typ == "A" && (net.ParseIP(rec.Data) == nil || net.ParseIP(rec.Data).To4() == nil) {
				fields = append(fields, map[string]string{"code": "INVALID_VALUE", "path": "records[" + string(rune('0'+i)) + "].data", "message": "not an IPv4 address"})
			}
		}
		if len(fields) > 0 {
			fakeErr(w, http.StatusUnprocessableEntity, map[string]any{"code": "INVALID_BODY", "message": "Request body doesn't fulfill schema, see details in `fields`", "fields": fields})
			return
		}
		for i := range in {
			in[i].Name, in[i].Type = name, typ
		}
		sort.Slice(in, func(a, b int) bool { return in[a].Data < in[b].Data })
		f.records[k] = in
		f.puts++
		w.WriteHeader(http.StatusOK)
	case http.MethodDelete:
		if f.records[k] == nil {
			fakeErr(w, http.StatusNotFound, map[string]any{"code": "NOT_FOUND", "message": "record not found"})
			return
		}
		delete(f.records, k)
		w.WriteHeader(http.StatusNoContent)
	default:
		fakeErr(w, http.StatusMethodNotAllowed, map[string]any{"code": "METHOD_NOT_ALLOWED", "message": r.Method})
	}
}

func (f *fakeGoDaddy) module() *edge.DNSRecord {
	return &edge.DNSRecord{Provider: "godaddy", Zone: f.domain, APIKey: f.key, APISecret: f.secret, APIURL: f.URL, VerifyTimeout: "5s"}
}

func (f *fakeGoDaddy) lookup(t *testing.T, name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.records["A "+name] {
		out = append(out, r.Data)
	}
	return out
}

// TestDNSRecordFakeGoDaddy runs the scenario against the fake GoDaddy API.
func TestDNSRecordFakeGoDaddy(t *testing.T) {
	dnsScenario(t, newFakeGoDaddy(t))
}

// TestDNSRecordFakeGoDaddyUnauthorized: a 401 says the key was refused and
// never shows the key or secret.
func TestDNSRecordFakeGoDaddyUnauthorized(t *testing.T) {
	f := newFakeGoDaddy(t)
	m := f.module()
	m.APISecret = "wrong-secret-xyz"
	m.Names, m.Values = []string{"api"}, []string{"192.0.2.10"}
	_, err := m.Check(context.Background(), transport.NewLocalConn("localhost"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "401")
	require.Contains(t, err.Error(), "api_key, api_secret")
	require.NotContains(t, err.Error(), "wrong-secret-xyz")
	require.NotContains(t, err.Error(), f.key)
}

// TestDNSRecordFakeGoDaddyInvalid: a 422 names the refused fields, and
// nothing changes.
func TestDNSRecordFakeGoDaddyInvalid(t *testing.T) {
	f := newFakeGoDaddy(t)
	m := f.module()
	m.Names, m.Values = []string{"www"}, []string{"192.0.2.10"}
	ctx := context.Background()
	c := transport.NewLocalConn("localhost")
	ch, err := m.Check(ctx, c)
	require.NoError(t, err)
	err = m.Apply(ctx, c, ch)
	require.Error(t, err)
	require.Contains(t, err.Error(), "422")
	require.Contains(t, err.Error(), "refused as invalid")
	require.Contains(t, err.Error(), "a CNAME exists for www")
	require.Empty(t, f.lookup(t, "www"))
}

// TestDNSRecordFakeGoDaddyRateLimited: 429s are retried after the time the
// API asks for, and the update then goes through.
func TestDNSRecordFakeGoDaddyRateLimited(t *testing.T) {
	f := newFakeGoDaddy(t)
	f.limit = 2
	m := f.module()
	m.Names, m.Values = []string{"api"}, []string{"192.0.2.10"}
	ctx := context.Background()
	c := transport.NewLocalConn("localhost")
	ch, err := m.Check(ctx, c)
	require.NoError(t, err)
	require.NoError(t, m.Apply(ctx, c, ch))
	require.Equal(t, []string{"192.0.2.10"}, f.lookup(t, "api"))
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.limited, 2)
	for i := range f.limited {
		require.GreaterOrEqual(t, f.retried[i].Sub(f.limited[i]), 900*time.Millisecond, "Retry-After: 1 is honoured")
	}

	// Rate limited for longer than the retries: a clear error.
	f.limit = 100
	f.mu.Unlock()
	m2 := f.module()
	m2.Names, m2.Values = []string{"apigw"}, []string{"192.0.2.10"}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = m2.Check(cctx, c)
	cancel()
	f.mu.Lock()
	require.Error(t, err)
	require.Contains(t, err.Error(), "rate limit")
}
