package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// goDaddy speaks GoDaddy's Domains API (v1): record sets are read with
// GET /v1/domains/{domain}/records/{type}/{name}, replaced with PUT on the
// same path, and removed with DELETE.
type goDaddy struct {
	base, zone  string
	key, secret string
	client      *http.Client
	// maxRetries bounds the retries of a rate-limited (429) request.
	maxRetries int
}

const goDaddyURL = "https://api.godaddy.com"

func newGoDaddy(c dnsConfig) *goDaddy {
	base := c.APIURL
	if base == "" {
		base = goDaddyURL
	}
	return &goDaddy{
		base: strings.TrimSuffix(base, "/"), zone: c.Zone, key: c.APIKey, secret: c.APISecret,
		client: &http.Client{Timeout: 30 * time.Second}, maxRetries: 5,
	}
}

// goDaddyRecord is one record in the API's JSON.
type goDaddyRecord struct {
	Data string `json:"data"`
	Name string `json:"name,omitempty"`
	TTL  int    `json:"ttl,omitempty"`
	Type string `json:"type,omitempty"`
}

// goDaddyError is the API's error body.
type goDaddyError struct {
	Code          string `json:"code"`
	Message       string `json:"message"`
	RetryAfterSec int    `json:"retryAfterSec"`
	Fields        []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Path    string `json:"path"`
	} `json:"fields"`
}

func (g *goDaddy) path(k recordKey) string {
	return fmt.Sprintf("%s/v1/domains/%s/records/%s/%s", g.base, url.PathEscape(g.zone), url.PathEscape(k.Type), url.PathEscape(k.Name))
}

// Get implements dnsProvider.
func (g *goDaddy) Get(ctx context.Context, k recordKey) (rrset, bool, error) {
	body, err := g.do(ctx, http.MethodGet, g.path(k), nil)
	if err != nil {
		return rrset{}, false, err
	}
	var recs []goDaddyRecord
	if err := json.Unmarshal(body, &recs); err != nil {
		return rrset{}, false, fmt.Errorf("godaddy: GET %s %s: bad response: %w", k.Type, k.Name, err)
	}
	if len(recs) == 0 {
		return rrset{}, false, nil
	}
	var s rrset
	var vals []string
	for _, r := range recs {
		vals = append(vals, r.Data)
		if s.TTL == 0 || r.TTL < s.TTL {
			s.TTL = r.TTL
		}
	}
	if s.Values, err = normValues(k.Type, vals); err != nil {
		// Not ours to judge: compare as the API gave them.
		sort.Strings(vals)
		s.Values = vals
	}
	return s, true, nil
}

// Set implements dnsProvider: PUT replaces every record of name and type.
func (g *goDaddy) Set(ctx context.Context, k recordKey, s rrset) error {
	recs := make([]goDaddyRecord, 0, len(s.Values))
	for _, v := range s.Values {
		recs = append(recs, goDaddyRecord{Data: v, TTL: s.TTL})
	}
	b, _ := json.Marshal(recs)
	_, err := g.do(ctx, http.MethodPut, g.path(k), b)
	return err
}

// Delete implements dnsProvider. A set already gone (404) is as wanted.
func (g *goDaddy) Delete(ctx context.Context, k recordKey) error {
	_, err := g.do(ctx, http.MethodDelete, g.path(k), nil)
	var se *goDaddyStatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return nil
	}
	return err
}

// goDaddyStatusError is a non-2xx answer.
type goDaddyStatusError struct {
	Method, Path string
	Status       int
	Body         goDaddyError
}

func (e *goDaddyStatusError) Error() string {
	what := fmt.Sprintf("godaddy: %s %s: %d", e.Method, e.Path, e.Status)
	msg := e.Body.Message
	if e.Body.Code != "" {
		msg = e.Body.Code + ": " + msg
	}
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return what + ": the API key and secret were refused (check api_key, api_secret and that the key is for this environment): " + msg
	case http.StatusUnprocessableEntity:
		var fields []string
		for _, f := range e.Body.Fields {
			fields = append(fields, fmt.Sprintf("%s: %s", f.Path, f.Message))
		}
		if len(fields) > 0 {
			msg += " (" + strings.Join(fields, "; ") + ")"
		}
		return what + ": the record was refused as invalid: " + msg
	case http.StatusTooManyRequests:
		return what + ": still rate limited after retries: " + msg
	}
	return what + ": " + msg
}

// do sends one request, retrying a 429 after the time the API asks for
// (Retry-After, or retryAfterSec in the body), with growing backoff.
func (g *goDaddy) do(ctx context.Context, method, u string, body []byte) ([]byte, error) {
	short := strings.TrimPrefix(u, g.base)
	backoff := time.Second
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("godaddy: %s %s: %w", method, short, err)
		}
		req.Header.Set("Authorization", "sso-key "+g.key+":"+g.secret)
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := g.client.Do(req)
		if err != nil {
			// url.Error holds the URL, never the headers.
			return nil, fmt.Errorf("godaddy: %s %s: %w", method, short, err)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("godaddy: %s %s: read response: %w", method, short, err)
		}
		if resp.StatusCode/100 == 2 {
			return data, nil
		}
		se := &goDaddyStatusError{Method: method, Path: short, Status: resp.StatusCode}
		_ = json.Unmarshal(data, &se.Body)
		if se.Body.Message == "" {
			se.Body.Message = strings.TrimSpace(string(data))
		}
		if resp.StatusCode != http.StatusTooManyRequests || attempt >= g.maxRetries {
			return nil, se
		}
		wait := backoff
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			wait = time.Duration(s) * time.Second
		} else if se.Body.RetryAfterSec > 0 {
			wait = time.Duration(se.Body.RetryAfterSec) * time.Second
		}
		if wait > time.Minute {
			wait = time.Minute
		}
		if wait < backoff/2 {
			wait = backoff / 2
		}
		backoff *= 2
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("godaddy: %s %s: waiting out the rate limit: %w", method, short, ctx.Err())
		case <-t.C:
		}
	}
}
