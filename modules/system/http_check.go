package system

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
)

func httpCheckInfo() modules.Info {
	return modules.Info{
		Name: "http_check",
		Doc:  "Check an HTTP(S) endpoint from the host (or the control machine with delegate): expected status and body, retried until a deadline; never changes anything",
		Example: `step "health" {
  module     = "http_check"
  url        = "https://app.example.com/health"
  status     = [200]
  body_regex = "\"version\":\\s*\"abc1234\""
  within     = "60s"
  register   = "health"
}`,
		Outputs: []modules.Output{
			{Name: "url", Type: "string", Doc: "the URL"},
			{Name: "status", Type: "number", Doc: "the last HTTP status"},
			{Name: "body", Type: "string", Doc: "an excerpt of the last body"},
			{Name: "latency_ms", Type: "number", Doc: "the last request's latency in ms"},
			{Name: "attempts", Type: "number", Doc: "requests made"},
			{Name: "elapsed", Type: "number", Doc: "seconds until it was as expected"},
		},
		ReadOnly: true,
		New:      func() modules.Module { return &HTTPCheck{} },
	}
}

// HTTPCheck asks an HTTP(S) endpoint until it answers as expected or the
// deadline passes, like Ansible's uri with until/retries. The request leaves
// from the host: the control machine speaks HTTP through a TCP connection
// the host opens (an SSH direct-tcpip channel), so names resolve and routes
// go as on the host and nothing needs installing there. With delegate =
// true the request leaves from the control machine. It never changes
// anything: Check does the asking, so check mode asks too.
type HTTPCheck struct {
	URL            string            `hcl:"url" doc:"http:// or https:// URL, resolved and reached from the host"`
	Method         string            `hcl:"method,optional" doc:"GET (default), HEAD or POST"`
	Body           string            `hcl:"body,optional" doc:"request body (POST)"`
	Headers        map[string]string `hcl:"headers,optional" sensitive:"true" doc:"request headers; treated as secret (they often carry tokens)"`
	Status         []int             `hcl:"status,optional" doc:"accepted status codes; default [200]"`
	BodyRegex      string            `hcl:"body_regex,optional" doc:"Go regexp the response body must match (the first 1 MiB is read)"`
	Within         string            `hcl:"within,optional" doc:"keep asking until this Go duration has passed; default \"30s\"; \"0s\" asks once"`
	Interval       string            `hcl:"interval,optional" doc:"pause between attempts, a Go duration; default \"1s\""`
	AttemptTimeout string            `hcl:"attempt_timeout,optional" doc:"limit of one attempt, a Go duration; default \"10s\""`
	ValidateCerts  *bool             `hcl:"validate_certs,optional" doc:"verify the server's TLS certificate and name; default true"`
	CAFile         string            `hcl:"ca_file,optional" doc:"PEM file on the control machine with CAs to trust instead of the system's"`
	FollowRedirect *bool             `hcl:"follow_redirects,optional" doc:"follow redirects (up to 10); default true"`

	out httpOutput
}

// httpOutput is what a step registers.
type httpOutput struct {
	status   int
	body     string
	latency  time.Duration
	attempts int
	elapsed  time.Duration
}

// maxBody bounds what is read of a response; bodyExcerpt what is kept.
const (
	maxBody     = 1 << 20
	bodyExcerpt = 1024
)

// Validate implements modules.Validator.
func (m *HTTPCheck) Validate() error {
	u, err := url.Parse(m.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return modules.ArgErrorf("url", "http_check: %q is not an http:// or https:// URL", m.URL)
	}
	switch m.method() {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		return modules.ArgErrorf("method", "http_check: method %q is not GET, HEAD or POST", m.Method)
	}
	if m.Body != "" && m.method() != http.MethodPost {
		return modules.ArgErrorf("body", "http_check: a body needs method = \"POST\"")
	}
	for _, s := range m.Status {
		if s < 100 || s > 599 {
			return modules.ArgErrorf("status", "http_check: %d is not an HTTP status", s)
		}
	}
	if m.BodyRegex != "" {
		if m.method() == http.MethodHead {
			return modules.ArgErrorf("body_regex", "http_check: a HEAD response has no body to match")
		}
		if _, err := regexp.Compile(m.BodyRegex); err != nil {
			return modules.ArgErrorf("body_regex", "http_check: %v", err)
		}
	}
	for _, d := range []struct{ arg, v string }{{"within", m.Within}, {"interval", m.Interval}, {"attempt_timeout", m.AttemptTimeout}} {
		if d.v == "" {
			continue
		}
		if v, err := time.ParseDuration(d.v); err != nil || v < 0 || (v == 0 && d.arg == "attempt_timeout") {
			return modules.ArgErrorf(d.arg, "http_check: %q is not a positive Go duration such as \"30s\"", d.v)
		}
	}
	if m.CAFile != "" && !m.validate() {
		return modules.ArgErrorf("ca_file", "http_check: ca_file with validate_certs = false would not be used")
	}
	for k := range m.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n") {
			return modules.ArgErrorf("headers", "http_check: %q is not a header name", k)
		}
	}
	return nil
}

func (m *HTTPCheck) method() string {
	if m.Method == "" {
		return http.MethodGet
	}
	return strings.ToUpper(m.Method)
}

func (m *HTTPCheck) validate() bool { return m.ValidateCerts == nil || *m.ValidateCerts }

func (m *HTTPCheck) statuses() []int {
	if len(m.Status) == 0 {
		return []int{http.StatusOK}
	}
	return m.Status
}

func dur(s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, _ := time.ParseDuration(s) // checked by Validate
	return d
}

// Check implements modules.Module: it asks until the answer is as wanted
// (nil: nothing to change) or the deadline passes (an error naming the last
// answer).
func (m *HTTPCheck) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	d, ok := c.(modules.Dialer)
	if !ok {
		return nil, fmt.Errorf("http_check %s: the connection to %s cannot open connections from the host", m.URL, c.Host())
	}
	client, err := m.client(d)
	if err != nil {
		return nil, err
	}
	defer client.CloseIdleConnections()
	var re *regexp.Regexp
	if m.BodyRegex != "" {
		re = regexp.MustCompile(m.BodyRegex)
	}
	within, interval, perTry := dur(m.Within, 30*time.Second), dur(m.Interval, time.Second), dur(m.AttemptTimeout, 10*time.Second)
	start := time.Now()
	deadline := start.Add(within)
	var last string
	for {
		m.out.attempts++
		why, err := m.attempt(ctx, client, re, perTry)
		m.out.elapsed = time.Since(start)
		if err == nil && why == "" {
			return nil, nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = why
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("http_check %s: %w (last: %s)", m.URL, ctx.Err(), last)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, fmt.Errorf("http_check %s: not as expected within %s (%d %s): %s",
				m.URL, within, m.out.attempts, plural(m.out.attempts, "attempt"), last)
		}
		modules.ReportStatus(c, modules.Status{Text: "waiting for " + m.URL + ": " + last, Since: start, Max: within})
		t := time.NewTimer(min(wait, interval))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("http_check %s: %w (last: %s)", m.URL, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// client is an http.Client whose connections the host opens.
func (m *HTTPCheck) client(d modules.Dialer) (*http.Client, error) {
	tc := &tls.Config{InsecureSkipVerify: !m.validate()} // #nosec G402 -- only when validate_certs = false
	if m.CAFile != "" {
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return nil, fmt.Errorf("http_check: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http_check: ca_file %s holds no PEM certificate", m.CAFile)
		}
		tc.RootCAs = pool
	}
	tr := &http.Transport{
		DialContext:         d.Dial,
		TLSClientConfig:     tc,
		DisableKeepAlives:   true, // every attempt is a fresh connection, as a client would see it
		TLSHandshakeTimeout: 10 * time.Second,
		Proxy:               nil, // the control machine's proxy settings mean nothing on the host
	}
	cl := &http.Client{Transport: tr}
	if m.FollowRedirect != nil && !*m.FollowRedirect {
		cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return cl, nil
}

// attempt asks once. why says how the answer differs from the wanted one
// ("" when it does not); err is a request that got no answer.
func (m *HTTPCheck) attempt(ctx context.Context, cl *http.Client, re *regexp.Regexp, limit time.Duration) (why string, err error) {
	actx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var body io.Reader
	if m.Body != "" {
		body = strings.NewReader(m.Body)
	}
	req, err := http.NewRequestWithContext(actx, m.method(), m.URL, body)
	if err != nil {
		return "", err
	}
	for k, v := range m.Headers {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	t0 := time.Now()
	resp, err := cl.Do(req)
	if err != nil {
		return "", unwrapURLError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	m.out.latency = time.Since(t0)
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	m.out.status, m.out.body = resp.StatusCode, excerpt(b, bodyExcerpt)
	if !slices.Contains(m.statuses(), resp.StatusCode) {
		return fmt.Sprintf("status %d, want %s; body: %q", resp.StatusCode, statusList(m.statuses()), excerpt(b, 200)), nil
	}
	if re != nil && !re.Match(b) {
		return fmt.Sprintf("status %d, but the body does not match %q; body: %q", resp.StatusCode, m.BodyRegex, excerpt(b, 200)), nil
	}
	return "", nil
}

// Apply implements modules.Module. Check never returns a change, so there
// is nothing to apply, and nothing for rollback to undo.
func (m *HTTPCheck) Apply(context.Context, modules.Conn, *modules.Change) error { return nil }

// Output implements modules.Outputter: status, body (the first 1 KiB),
// latency_ms of the last attempt, attempts and elapsed seconds.
func (m *HTTPCheck) Output() map[string]any {
	return map[string]any{
		"url":        m.URL,
		"status":     m.out.status,
		"body":       m.out.body,
		"latency_ms": float64(m.out.latency.Microseconds()) / 1000,
		"attempts":   m.out.attempts,
		"elapsed":    m.out.elapsed.Seconds(),
	}
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}

// excerpt is the first n bytes of b as valid UTF-8.
func excerpt(b []byte, n int) string {
	if len(b) <= n {
		return strings.ToValidUTF8(string(b), "?")
	}
	return strings.ToValidUTF8(string(b[:n]), "?") + "…"
}

func statusList(s []int) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Itoa(v)
	}
	if len(q) == 1 {
		return q[0]
	}
	return "one of " + strings.Join(q, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
