package modules

import (
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

// SecretsUser is a module that must know the run's sensitive values (to
// mark what it writes as sensitive). The runner calls UseSecrets once the
// module is built, before Check.
type SecretsUser interface {
	UseSecrets(*Secrets)
}

// RunSecrets, embedded in a module, implements SecretsUser.
type RunSecrets struct{ secrets *Secrets }

// UseSecrets implements SecretsUser.
func (r *RunSecrets) UseSecrets(s *Secrets) { r.secrets = s }

// Secrets is the run's set, or nil when the module runs alone.
func (r *RunSecrets) Secrets() *Secrets { return r.secrets }

// MarkSensitive marks values learnt at run time (join tokens, generated
// passwords) so that they never reach output or records in clear text.
func (r *RunSecrets) MarkSensitive(values ...string) { r.secrets.Add(values...) }
