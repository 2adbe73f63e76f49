// Package edge holds the modules at the edge of a deployment: the TLS
// certificate a reverse proxy serves (cert_reload) and the DNS records that
// point at it (dns_record).
package edge

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// Modules lists the edge family for modules/stock.
func Modules() []modules.Info {
	return []modules.Info{
		{
			Name:    "cert_reload",
			Doc:     "Install a validated TLS certificate, chain and key atomically, reload the server when it changed, verify it is served, else put the old one back",
			Example: certReloadExample,
			Outputs: []modules.Output{
				{Name: "reloaded", Type: "bool", Doc: "whether the server was reloaded"},
				{Name: "fingerprint", Type: "string", Doc: "the installed certificate's SHA-256 fingerprint (absent when there is none)"},
				{Name: "not_after", Type: "string", Doc: "its expiry, RFC 3339"},
				{Name: "previous_fingerprint", Type: "string", Doc: "the replaced certificate (after a change)"},
			},
			Diff:  "the certificate's fingerprint, subject, names and expiry, never the key",
			Files: true,
			New:   func() modules.Module { return &CertReload{} },
		},
		{
			Name:    "dns_record",
			Doc:     "Set DNS records through GoDaddy's API or RFC 2136 dynamic update with TSIG, changing only what differs, and wait until the answer matches",
			Example: dnsRecordExample,
			Outputs: []modules.Output{
				{Name: "records", Type: "map(list(string))", Doc: "the values wanted, keyed \"NAME TYPE\""},
			},
			Diff: "the zone's records before and after",
			New:  func() modules.Module { return &DNSRecord{} },
		},
	}
}

const certReloadExample = `step "swag-cert" {
  module          = "cert_reload"
  src_cert        = "/config/etc/letsencrypt/live/iklim.co/fullchain.pem"
  src_key         = "/config/etc/letsencrypt/live/iklim.co/privkey.pem"
  remote_src      = true
  cert            = "/mnt/storagebox/ssl/fullchain.pem"
  key             = "/mnt/storagebox/ssl/privkey.pem"
  names           = ["iklim.co", "api.iklim.co"]
  min_days        = 7
  reload_container = "swag"
  verify          = "127.0.0.1:443"
  verify_name     = "api.iklim.co"
}

step "vault-tls-placeholder" {
  module      = "cert_reload"
  placeholder = true
  names       = ["vault.iklim.co"]
  cert        = "/etc/iklim/vault/tls.crt"
  key         = "/etc/iklim/vault/tls.key"
}`

const dnsRecordExample = `step "dns" {
  module     = "dns_record"
  delegate   = true   # the API is called from the control machine; recorded there
  run_once   = true
  provider   = "godaddy"
  zone       = "iklim.co"
  api_key    = var.godaddy_key      # variable "godaddy_key" { sensitive = true }
  api_secret = var.godaddy_secret
  names      = ["api", "apigw", "rabbitmq", "grafana"]
  values     = [host.vars.floating_ip]
  record "www" {
    type   = "CNAME"
    values = ["iklim.co"]
    ttl    = 3600
  }
}`

// q quotes s for the host's shell.
func q(s string) string { return remote.Quote(s) }

// run runs script and turns a non-zero exit into an error naming what.
func run(ctx context.Context, c modules.Conn, what, script string) error {
	res, err := c.Run(ctx, script)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return res.Err(what)
}

func randomHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// parseMode reads an optional octal mode; "" gives def.
func parseMode(s string, def uint32) (uint32, error) {
	if s == "" {
		return def, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal mode such as \"0644\"", s)
	}
	return uint32(m), nil
}

// idMatches reports whether want (a name or numeric id, or "") names the
// file's id or name.
func idMatches(want, id, name string) bool { return want == "" || want == id || want == name }
