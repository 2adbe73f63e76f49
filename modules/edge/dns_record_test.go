package edge_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/edge"
	"github.com/iklimco/iklim/runner/transport"
)

// dnsBackend is a real or fake DNS provider the scenario runs against.
type dnsBackend interface {
	// module returns a dns_record with the provider's settings, no records.
	module() *edge.DNSRecord
	// lookup reads name's A records straight from the server, not through
	// the module.
	lookup(t *testing.T, name string) []string
}

// roundTrip stores and reads back a Change the way a backup record does,
// so that Apply and Rollback see only what was recorded.
func roundTrip(t *testing.T, ch *modules.Change) *modules.Change {
	t.Helper()
	b, err := json.Marshal(ch)
	require.NoError(t, err)
	var out modules.Change
	require.NoError(t, json.Unmarshal(b, &out))
	return &out
}

// dnsScenario: create and update A records in one step, check mode and diff,
// rerun without change, rollback (restore and delete what was created).
func dnsScenario(t *testing.T, be dnsBackend) {
	ctx := context.Background()
	secrets := modules.NewSecrets()
	c := transport.NewLocalConn("localhost")
	floating := "192.0.2.10"
	seed := func() *edge.DNSRecord {
		m := be.module()
		m.UseSecrets(secrets)
		m.Names = []string{"api", "apigw", "rabbitmq", "grafana"}
		m.Values = []string{floating}
		m.TTL = 600
		return m
	}
	require.Equal(t, []string{"192.0.2.50"}, be.lookup(t, "grafana"), "the zone starts with grafana")
	require.Empty(t, be.lookup(t, "api"))

	// Check and diff: old → new per record; the server is untouched.
	m := seed()
	ch, err := m.Check(ctx, c)
	require.NoError(t, err)
	require.NotNil(t, ch)
	require.Contains(t, ch.Summary, "create api A")
	require.Contains(t, ch.Summary, "update grafana A")
	require.Contains(t, ch.Diff.Before, "grafana.iklim.test. 600 IN A 192.0.2.50")
	require.Contains(t, ch.Diff.After, "grafana.iklim.test. 600 IN A 192.0.2.10")
	require.Contains(t, ch.Diff.After, "api.iklim.test. 600 IN A 192.0.2.10")
	require.Empty(t, be.lookup(t, "api"), "check changes nothing")
	require.Equal(t, []string{"192.0.2.50"}, be.lookup(t, "grafana"))

	// Apply.
	rec := roundTrip(t, ch)
	require.NoError(t, m.Apply(ctx, c, rec))
	for _, n := range []string{"api", "apigw", "rabbitmq", "grafana"} {
		require.Equal(t, []string{floating}, be.lookup(t, n), n)
	}
	require.Equal(t, true, m.Output()["changed"])

	// Rerun: no change.
	ch2, err := seed().Check(ctx, c)
	require.NoError(t, err)
	require.Nil(t, ch2)

	// Rollback: grafana restored, the created ones deleted.
	require.NoError(t, (&edge.DNSRecord{}).Rollback(ctx, c, rec))
	require.Equal(t, []string{"192.0.2.50"}, be.lookup(t, "grafana"))
	for _, n := range []string{"api", "apigw", "rabbitmq"} {
		require.Empty(t, be.lookup(t, n), n)
	}
}

// TestDNSRecordValidate: argument mistakes are bound to their argument and
// found before any provider is called.
func TestDNSRecordValidate(t *testing.T) {
	gd := func(mut func(*edge.DNSRecord)) *edge.DNSRecord {
		m := &edge.DNSRecord{Provider: "godaddy", Zone: "iklim.co", APIKey: "k-123456", APISecret: "s-123456",
			Names: []string{"api"}, Values: []string{"192.0.2.1"}}
		mut(m)
		return m
	}
	for _, tc := range []struct {
		name, arg, msg string
		m              *edge.DNSRecord
	}{
		{"unknown provider", "provider", "not \"godaddy\"", gd(func(m *edge.DNSRecord) { m.Provider = "route53" })},
		{"godaddy without secret", "api_secret", "api_secret", gd(func(m *edge.DNSRecord) { m.APISecret = "" })},
		{"godaddy ttl below 600", "names", "minimum of 600", gd(func(m *edge.DNSRecord) { m.TTL = 300 })},
		{"not an IPv4 address", "names", "not an IPv4 address", gd(func(m *edge.DNSRecord) { m.Values = []string{"2001:db8::1"} })},
		{"set twice", "record", "set twice", gd(func(m *edge.DNSRecord) {
			m.Record = []*edge.DNSRecordBlock{{Name: "api.iklim.co", Values: []string{"192.0.2.2"}}}
		})},
		{"no records", "names", "no records", gd(func(m *edge.DNSRecord) { m.Names, m.Values = nil, nil })},
		{"rfc2136 without server", "server", "authoritative server", &edge.DNSRecord{Provider: "rfc2136", Zone: "iklim.co", Names: []string{"a"}, Values: []string{"192.0.2.1"}}},
		{"tsig name without secret", "tsig_secret", "together", &edge.DNSRecord{Provider: "rfc2136", Zone: "iklim.co", Server: "127.0.0.1", TSIGName: "k", Names: []string{"a"}, Values: []string{"192.0.2.1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			var ae *modules.ArgError
			require.ErrorAs(t, err, &ae)
			require.Equal(t, tc.arg, ae.Arg)
			require.Contains(t, err.Error(), tc.msg)
		})
	}
}
