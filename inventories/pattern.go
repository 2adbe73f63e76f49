package inventories

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Pattern is a parsed host pattern, as in Ansible's hosts: and --limit.
//
// A pattern is a list of terms separated by ":" or ",". A term is "all" or
// "*" (every host), a host name, a group name, or a glob over host and group
// names ("*", "?", "[12]", "[a-c]", "[!0]"). A term prefixed with "&"
// intersects, one prefixed with "!" excludes. As in Ansible, the plain terms
// are united first, then the intersections apply, then the exclusions,
// whatever their order in the pattern; a pattern of only "&" and "!" terms
// starts from all hosts. "all" is matched as a word only: a glob such as "a*"
// does not select the implicit group. Regular expressions ("~…") and
// subscripts ("app[0]") are not supported: "[…]" is a glob class.
type Pattern struct {
	src   string
	terms []term
}

type termOp byte

const (
	opUnion     termOp = 0
	opIntersect termOp = '&'
	opExclude   termOp = '!'
)

type term struct {
	op   termOp
	text string // as written, without the operator
	glob string // path.Match pattern when text has glob characters
}

// String returns the pattern as it was written.
func (p Pattern) String() string { return p.src }

// PatternError is a syntax error in a host pattern.
type PatternError struct {
	Pattern string
	Msg     string
}

func (e *PatternError) Error() string {
	return fmt.Sprintf("host pattern %q: %s", e.Pattern, e.Msg)
}

// NoMatchError is a pattern term that names no host or group.
type NoMatchError struct {
	Term string
}

func (e *NoMatchError) Error() string {
	return fmt.Sprintf("pattern %q matches no host or group", e.Term)
}

// ParsePattern checks the syntax of a host pattern without looking at an
// inventory, so that a playbook can be validated before any host is touched.
func ParsePattern(s string) (Pattern, error) {
	fail := func(format string, args ...any) (Pattern, error) {
		return Pattern{}, &PatternError{Pattern: s, Msg: fmt.Sprintf(format, args...)}
	}
	if strings.TrimSpace(s) == "" {
		return fail("empty pattern")
	}
	p := Pattern{src: s}
	for _, raw := range splitTerms(s) {
		text := strings.TrimSpace(raw)
		if text == "" {
			return fail("empty term")
		}
		t := term{}
		switch text[0] {
		case '&', '!':
			t.op = termOp(text[0])
			text = strings.TrimSpace(text[1:])
			if text == "" {
				return fail("%q must be followed by a host, group or glob", string(t.op))
			}
			if text[0] == '&' || text[0] == '!' {
				return fail("term %q has more than one of & and !", raw)
			}
		case '~':
			return fail("regular expressions (~) are not supported; use a glob")
		}
		if strings.ContainsFunc(text, isSpace) {
			return fail("term %q contains whitespace", text)
		}
		t.text = text
		if strings.ContainsAny(text, "*?[") {
			// fnmatch spells a negated class [!…]; path.Match spells it [^…].
			g := strings.ReplaceAll(text, "[!", "[^")
			if _, err := path.Match(g, ""); err != nil {
				return fail("bad glob %q", text)
			}
			t.glob = g
		}
		p.terms = append(p.terms, t)
	}
	return p, nil
}

// splitTerms splits on ":" and ",". Host and group names cannot contain
// either.
func splitTerms(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == ':' || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// Select returns the hosts that pattern selects, in inventory order.
func (inv *Inventory) Select(pattern string) ([]*Host, error) {
	p, err := ParsePattern(pattern)
	if err != nil {
		return nil, err
	}
	return inv.Match(p)
}

// Match returns the hosts p selects, in inventory order, without duplicates.
// A term that names no host or group is an error (a *NoMatchError, all of
// them joined), so that a typo in an exclusion cannot widen a run. A pattern
// whose terms all exist but whose result is empty, such as "app:&db", is not
// an error.
func (inv *Inventory) Match(p Pattern) ([]*Host, error) {
	if len(p.terms) == 0 {
		return nil, &PatternError{Pattern: p.src, Msg: "empty pattern"}
	}
	members := inv.memberIndex()
	var errs []error
	sets := make([]map[string]bool, len(p.terms))
	for i, t := range p.terms {
		set, ok := inv.matchTerm(t, members)
		if !ok {
			errs = append(errs, &NoMatchError{Term: t.text})
		}
		sets[i] = set
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	selected := map[string]bool{}
	hasUnion := false
	for i, t := range p.terms {
		if t.op == opUnion {
			hasUnion = true
			for n := range sets[i] {
				selected[n] = true
			}
		}
	}
	if !hasUnion {
		for _, h := range inv.Hosts {
			selected[h.Name] = true
		}
	}
	for i, t := range p.terms {
		if t.op == opIntersect {
			for n := range selected {
				if !sets[i][n] {
					delete(selected, n)
				}
			}
		}
	}
	for i, t := range p.terms {
		if t.op == opExclude {
			for n := range sets[i] {
				delete(selected, n)
			}
		}
	}

	out := []*Host{}
	for _, h := range inv.Hosts {
		if selected[h.Name] {
			out = append(out, h)
			delete(selected, h.Name) // a duplicate name cannot appear twice
		}
	}
	return out, nil
}

// Limit keeps the hosts that are also selected by the --limit pattern, in
// the order of hosts. An empty limit keeps them all.
func (inv *Inventory) Limit(hosts []*Host, limit string) ([]*Host, error) {
	if strings.TrimSpace(limit) == "" {
		return hosts, nil
	}
	sel, err := inv.Select(limit)
	if err != nil {
		return nil, fmt.Errorf("limit: %w", err)
	}
	keep := make(map[string]bool, len(sel))
	for _, h := range sel {
		keep[h.Name] = true
	}
	out := []*Host{}
	for _, h := range hosts {
		if keep[h.Name] {
			out = append(out, h)
		}
	}
	return out, nil
}

// memberIndex maps every group to the names of its hosts, direct and through
// children. Membership comes from both Inventory.Groups and Host.Groups, so
// that inventories built in code with either work.
func (inv *Inventory) memberIndex() map[string]map[string]bool {
	idx := map[string]map[string]bool{}
	var collect func(g string, into map[string]bool, seen map[string]bool)
	collect = func(g string, into map[string]bool, seen map[string]bool) {
		if seen[g] {
			return
		}
		seen[g] = true
		grp, ok := inv.Groups[g]
		if !ok {
			return
		}
		for _, h := range grp.Hosts {
			into[h] = true
		}
		for _, c := range grp.Children {
			collect(c, into, seen)
		}
	}
	for name := range inv.Groups {
		set := map[string]bool{}
		collect(name, set, map[string]bool{})
		idx[name] = set
	}
	for _, h := range inv.Hosts {
		for _, g := range h.Groups {
			if g == AllGroup {
				continue
			}
			if idx[g] == nil {
				idx[g] = map[string]bool{}
			}
			idx[g][h.Name] = true
		}
	}
	return idx
}

// matchTerm returns the host names a term selects, and false when the term
// names no host or group at all.
func (inv *Inventory) matchTerm(t term, members map[string]map[string]bool) (map[string]bool, bool) {
	set := map[string]bool{}
	if t.text == AllGroup || t.text == "*" {
		for _, h := range inv.Hosts {
			set[h.Name] = true
		}
		return set, true
	}
	match := func(name string) bool {
		if t.glob == "" {
			return name == t.text
		}
		ok, _ := path.Match(t.glob, name)
		return ok
	}
	found := false
	for g, hosts := range members {
		if match(g) {
			found = true
			for n := range hosts {
				set[n] = true
			}
		}
	}
	for _, h := range inv.Hosts {
		if match(h.Name) {
			found = true
			set[h.Name] = true
		}
	}
	return set, found
}
