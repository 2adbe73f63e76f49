package modules

import (
	"context"
	"sort"
	"strings"
	"sync"
)

// Redacted replaces a sensitive value wherever iklim prints or stores text.
const Redacted = "(sensitive)"

// Secrets is the set of sensitive values known to one run. Everything that
// leaves the runner — output, events, diffs, backup records — passes through
// Redact.
type Secrets struct {
	mu       sync.RWMutex
	values   map[string]struct{}
	replacer *strings.Replacer
}

// NewSecrets returns an empty set.
func NewSecrets() *Secrets { return &Secrets{values: map[string]struct{}{}} }

// Add marks values as sensitive. Very short values are ignored: redacting
// "1" or "a" everywhere would garble output without protecting anything.
func (s *Secrets) Add(values ...string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range values {
		v = strings.TrimSpace(v)
		if len(v) < 4 {
			continue
		}
		if _, ok := s.values[v]; !ok {
			s.values[v] = struct{}{}
			s.replacer = nil
		}
	}
}

// Redact replaces every known sensitive value in text.
func (s *Secrets) Redact(text string) string {
	if s == nil || text == "" {
		return text
	}
	s.mu.RLock()
	r := s.replacer
	n := len(s.values)
	s.mu.RUnlock()
	if n == 0 {
		return text
	}
	if r == nil {
		s.mu.Lock()
		if s.replacer == nil {
			// Longest first, so a secret that contains another is replaced whole.
			vals := make([]string, 0, len(s.values))
			for v := range s.values {
				vals = append(vals, v)
			}
			sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
			pairs := make([]string, 0, 2*len(vals))
			for _, v := range vals {
				pairs = append(pairs, v, Redacted)
			}
			s.replacer = strings.NewReplacer(pairs...)
		}
		r = s.replacer
		s.mu.Unlock()
	}
	return r.Replace(text)
}

// Contains reports whether text holds any known sensitive value.
func (s *Secrets) Contains(text string) bool { return s.Redact(text) != text }

type secretsKey struct{}

// WithSecrets attaches a run's Secrets to ctx.
func WithSecrets(ctx context.Context, s *Secrets) context.Context {
	return context.WithValue(ctx, secretsKey{}, s)
}

// SecretsFrom returns the run's Secrets, or nil outside a run.
func SecretsFrom(ctx context.Context) *Secrets {
	s, _ := ctx.Value(secretsKey{}).(*Secrets)
	return s
}

// MarkSensitive marks values learnt at run time (join tokens, generated
// passwords) so that they never reach output or records in clear text.
func MarkSensitive(ctx context.Context, values ...string) {
	SecretsFrom(ctx).Add(values...)
}
