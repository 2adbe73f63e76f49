package playbooks

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// scope says which variables an expression may read.
type scope int

const (
	// scopeStatic: play, lock and step meta-arguments, decided once for all
	// hosts. Only var.* is known.
	scopeStatic scope = iota
	// scopeLocal: locals, evaluated per host, before any result.
	scopeLocal
	// scopeStep: when and module arguments, evaluated per host and step.
	scopeStep
)

func (s scope) roots() []string {
	switch s {
	case scopeStatic:
		return []string{rootVar, rootPath}
	case scopeLocal:
		return []string{rootVar, rootPath, rootLocal, rootHost, rootHosts, rootRun}
	default:
		return []string{rootVar, rootPath, rootLocal, rootHost, rootHosts, rootResult, rootSelf, rootRun}
	}
}

// registers tracks the register names declared by the steps compiled so far.
type registers struct {
	names map[string]int // register name → index of the play that declared it first
	play  int            // index of the play being compiled
	// unregistered maps the name of each step compiled so far that has no
	// register to where it is declared: a reference to it (self.conf.changed
	// with step "conf") is a step that never registers.
	unregistered map[string]hcl.Range
	// all maps every register name in the playbook to the step that first
	// declares it, so a reference to a later step's result says so.
	all map[string]stepRef
	// current is the step being compiled.
	current hcl.Range
}

// stepRef names a step and where it is declared.
type stepRef struct {
	name  string
	where hcl.Range
}

// unknownResult explains a reference to reg, which no earlier step
// registers: a later step registers it, a step of that name has no
// register, or nothing is called so.
func (r *registers) unknownResult(reg string) (summary, detail string) {
	if s, ok := r.all[reg]; ok && s.where == r.current {
		return "Result read before it is registered", fmt.Sprintf("Step %q registers %q itself: its own arguments and when cannot read it; only later steps can.", s.name, reg)
	}
	if s, ok := r.all[reg]; ok {
		return "Result read before it is registered", fmt.Sprintf("Step %q (%s) registers %q, but it runs after this step: a step reads only the results of steps before it.", s.name, rangeLine(s.where), reg)
	}
	if where, ok := r.unregistered[reg]; ok {
		return "Step does not register", fmt.Sprintf("Step %q (%s) does not register its result: add register = %q to it to read self.%s.changed.", reg, rangeLine(where), reg, reg)
	}
	return "Unknown result", fmt.Sprintf("No earlier step registers %q.%s", reg, suggestion(reg, r.list()))
}

// refCheck is what checkRefs learnt about one expression.
type refCheck struct {
	diags hcl.Diagnostics
	// readsPeers is set when the expression reads another host's result
	// registered in the current play (or one it cannot name statically), so
	// the step needs a barrier.
	readsPeers bool
}

// checkRefs checks every variable reference of expr before anything is
// evaluated: known roots, declared variables and locals, host attributes,
// inventory host names and register names declared by earlier steps.
// what names the expression in messages ("The hosts pattern").
func (c *compiler) checkRefs(expr hcl.Expression, sc scope, regs *registers, what string) refCheck {
	var rc refCheck
	if expr == nil {
		return rc
	}
	errf := func(t hcl.Traversal, summary, format string, args ...any) {
		rc.diags = append(rc.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  summary,
			Detail:   fmt.Sprintf(format, args...),
			Subject:  t.SourceRange().Ptr(),
		})
	}
	allowed := sc.roots()
	for _, t := range expr.Variables() {
		root := t.RootName()
		rest := t[1:]
		if !slices.Contains(allowed, root) {
			switch {
			case slices.Contains(scopeStep.roots(), root) && sc == scopeStatic:
				errf(t, "Invalid reference", "%s cannot read %s: it is decided once for all hosts, before any host is chosen. Only var.* and path.* can be used here.", what, root)
			case slices.Contains(scopeStep.roots(), root):
				errf(t, "Invalid reference", "%s cannot read %s: locals are evaluated per host before any step has run. Read results in the step itself.", what, root)
			default:
				errf(t, "Unknown variable", "There is no variable named %q.%s", root, suggestion(root, allowed))
			}
			continue
		}
		switch root {
		case rootVar:
			if name, ok := staticKey(rest, 0); ok {
				if _, declared := c.vars[name]; !declared {
					errf(t, "Reference to undeclared variable", "No variable %q is declared in this playbook; declare it with a variable block.%s", name, suggestion(name, c.varNames()))
				}
			}
		case rootLocal:
			if name, ok := staticKey(rest, 0); ok {
				if _, declared := c.locals[name]; !declared {
					errf(t, "Reference to undeclared local value", "No local value %q is declared in this playbook.%s", name, suggestion(name, c.localNames()))
				}
			}
		case rootHost:
			if attr, ok := staticKey(rest, 0); ok && !slices.Contains(hostAttrs, attr) {
				errf(t, "Unsupported attribute", "A host has no attribute %q; it has %s.%s", attr, strings.Join(hostAttrs, ", "), suggestion(attr, hostAttrs))
			}
		case rootHosts:
			if name, ok := staticKey(rest, 0); ok && !c.knownHost(name) {
				errf(t, "Unknown host", "There is no host %q in the inventory.%s", name, suggestion(name, c.hostNames))
				continue
			}
			if attr, ok := staticKey(rest, 1); ok && !slices.Contains(hostAttrs, attr) {
				errf(t, "Unsupported attribute", "A host has no attribute %q; it has %s.%s", attr, strings.Join(hostAttrs, ", "), suggestion(attr, hostAttrs))
			}
		case rootResult:
			if name, ok := staticKey(rest, 0); ok && !c.knownHost(name) {
				errf(t, "Unknown host", "There is no host %q in the inventory.%s", name, suggestion(name, c.hostNames))
				continue
			}
			reg, ok := staticKey(rest, 1)
			if !ok {
				rc.readsPeers = true
				continue
			}
			play, declared := regs.names[reg]
			if !declared {
				sum, det := regs.unknownResult(reg)
				errf(t, sum, "%s", det)
				continue
			}
			if play == regs.play {
				rc.readsPeers = true
			}
		case rootSelf:
			if reg, ok := staticKey(rest, 0); ok {
				if _, declared := regs.names[reg]; !declared {
					sum, det := regs.unknownResult(reg)
					errf(t, sum, "%s", det)
				}
			}
		case rootRun:
			if attr, ok := staticKey(rest, 0); ok && attr != "check" {
				errf(t, "Unsupported attribute", "run has no attribute %q; it has check.", attr)
			}
		case rootPath:
			if attr, ok := staticKey(rest, 0); ok && attr != "dir" && attr != "file" {
				errf(t, "Unsupported attribute", "path has no attribute %q; it has dir and file.%s", attr, suggestion(attr, []string{"dir", "file"}))
			}
		}
	}
	return rc
}

// staticKey is the name the i-th step of a traversal reads, when it is a
// literal attribute name or string index.
func staticKey(rest hcl.Traversal, i int) (string, bool) {
	if i >= len(rest) {
		return "", false
	}
	switch s := rest[i].(type) {
	case hcl.TraverseAttr:
		return s.Name, true
	case hcl.TraverseIndex:
		if s.Key.IsKnown() && !s.Key.IsNull() && s.Key.Type() == cty.String {
			return s.Key.AsString(), true
		}
	}
	return "", false
}

func (r *registers) list() []string {
	out := make([]string, 0, len(r.names))
	for n := range r.names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// suggestion is ` Did you mean "x"?` when a known name is close to given,
// else "".
func suggestion(given string, known []string) string {
	best, bestDist := "", 4
	if len(given) > maxSuggestLen {
		return ""
	}
	for _, k := range known {
		if abs(len(k)-len(given)) >= bestDist {
			continue // cannot be close: skip the quadratic distance
		}
		d := levenshtein.Distance(given, k, nil)
		if d < bestDist && d < len(given)+len(k) {
			best, bestDist = k, d
		}
	}
	if best == "" || bestDist > 2 && bestDist*2 > len(given) {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}

// maxSuggestLen is the longest name "did you mean" is computed for; the
// distance costs the product of the lengths.
const maxSuggestLen = 256

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// hostDiags collects the diagnostics of one expression context over several
// hosts: each distinct diagnostic is reported once, naming the hosts it
// occurred on when that is not all of them.
type hostDiags struct {
	total   int
	order   []string
	entries map[string]*hostDiag
}

type hostDiag struct {
	diag  *hcl.Diagnostic
	hosts []string
}

func newHostDiags(total int) *hostDiags {
	return &hostDiags{total: total, entries: map[string]*hostDiag{}}
}

func (hd *hostDiags) add(host string, diags hcl.Diagnostics) {
	for _, d := range diags {
		var subj hcl.Range
		if d.Subject != nil {
			subj = *d.Subject
		}
		key := fmt.Sprintf("%d\x00%s\x00%s\x00%s:%d:%d", d.Severity, d.Summary, d.Detail, subj.Filename, subj.Start.Byte, subj.End.Byte)
		e, ok := hd.entries[key]
		if !ok {
			e = &hostDiag{diag: d}
			hd.entries[key] = e
			hd.order = append(hd.order, key)
		}
		if host != "" && !slices.Contains(e.hosts, host) {
			e.hosts = append(e.hosts, host)
		}
	}
}

func (hd *hostDiags) flush() hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, key := range hd.order {
		e := hd.entries[key]
		d := e.diag
		if len(e.hosts) > 0 && len(e.hosts) < hd.total {
			nd := *d
			which := "host"
			if len(e.hosts) > 1 {
				which = "hosts"
			}
			nd.Detail = strings.TrimSpace(fmt.Sprintf("%s (on %s %s)", d.Detail, which, strings.Join(e.hosts, ", ")))
			d = &nd
		}
		out = append(out, d)
	}
	hd.order, hd.entries = nil, map[string]*hostDiag{}
	return out
}
