package runner

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/zclconf/go-cty/cty"
)

// recapFor returns the host's counters, creating them on first sight.
func (e *engine) recapFor(host string) *HostRecap {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.recapLocked(host)
}

func (e *engine) recapLocked(host string) *HostRecap {
	r, ok := e.recaps[host]
	if !ok {
		r = &HostRecap{Host: host}
		e.recaps[host] = r
		e.order = append(e.order, host)
	}
	return r
}

// count adds a step's status to the recap; a failed or unreachable host
// takes no further steps unless the step ignores errors.
func (e *engine) count(host string, st Status, errText string, ignoreErrors bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.recapLocked(host)
	switch st {
	case StatusOK:
		r.OK++
	case StatusChanged:
		r.Changed++
	case StatusSkipped:
		r.Skipped++
	case StatusFailed:
		if ignoreErrors {
			r.Ignored++
			return
		}
		r.Failed++
		e.dead[host] = true
	case StatusUnreachable:
		r.Unreachable++
		e.dead[host] = true
	}
	if errText != "" && r.Error == "" {
		r.Error = e.opts.Secrets.Redact(errText)
	}
}

func (e *engine) hostRecap(host string) HostRecap {
	e.mu.Lock()
	defer e.mu.Unlock()
	return *e.recapLocked(host)
}

// controlRecap sums up the delegated changes recorded on the control
// machine: the run's overall outcome, since they were made for many hosts.
func (e *engine) controlRecap() HostRecap {
	e.mu.Lock()
	defer e.mu.Unlock()
	res := HostRecap{Host: e.control.Name, Changed: e.seq[e.control.Name]}
	for _, r := range e.recaps {
		res.Failed += r.Failed
		res.Unreachable += r.Unreachable
		if res.Error == "" && r.Error != "" {
			res.Error = r.Host + ": " + r.Error
		}
	}
	return res
}

func (e *engine) recap(d time.Duration) *Recap {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := &Recap{RunID: e.opts.Run.ID, Duration: d, Check: e.opts.Check}
	for _, h := range e.order {
		r.Hosts = append(r.Hosts, *e.recaps[h])
	}
	return r
}

// snapshotResults returns the registered results as they are now: a
// stable view while other hosts keep registering, since register never
// writes into a map it has handed out (copy on write). Taking a snapshot for
// every step of every host costs nothing; registering costs a copy of the
// host map.
func (e *engine) snapshotResults() map[string]map[string]cty.Value {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.results
}

// register sets host's result name to v; e.mu must be held.
func (e *engine) register(host, name string, v cty.Value) {
	regs := make(map[string]cty.Value, len(e.results[host])+1)
	maps.Copy(regs, e.results[host])
	regs[name] = v
	results := maps.Clone(e.results)
	results[host] = regs
	e.results = results
}

func (e *engine) registerValue(host, name string, v cty.Value) {
	if name == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.register(host, name, v)
}

// registerOutput stores a module's output plus "changed" under the step's
// register name.
func (e *engine) registerOutput(host, name string, m modules.Module, changed bool) {
	if name == "" {
		return
	}
	out := map[string]any{}
	if o, ok := m.(modules.Outputter); ok {
		maps.Copy(out, o.Output())
	}
	out["changed"] = changed
	e.registerValue(host, name, ToCty(out))
}

// ToCty converts a module's output (strings, numbers, bools, slices, maps)
// to a cty value for playbook expressions.
func ToCty(v any) cty.Value {
	switch t := v.(type) {
	case nil:
		return cty.NullVal(cty.DynamicPseudoType)
	case cty.Value:
		return t
	case string:
		return cty.StringVal(t)
	case bool:
		return cty.BoolVal(t)
	case int:
		return cty.NumberIntVal(int64(t))
	case int64:
		return cty.NumberIntVal(t)
	case uint32:
		return cty.NumberIntVal(int64(t))
	case float64:
		return cty.NumberFloatVal(t)
	case []string:
		vals := make([]cty.Value, len(t))
		for i, s := range t {
			vals[i] = cty.StringVal(s)
		}
		if len(vals) == 0 {
			return cty.ListValEmpty(cty.String)
		}
		return cty.TupleVal(vals)
	case []any:
		vals := make([]cty.Value, len(t))
		for i, x := range t {
			vals[i] = ToCty(x)
		}
		return cty.TupleVal(vals)
	case map[string]string:
		vals := make(map[string]cty.Value, len(t))
		for k, s := range t {
			vals[k] = cty.StringVal(s)
		}
		return cty.ObjectVal(vals)
	case map[string]any:
		vals := make(map[string]cty.Value, len(t))
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			vals[k] = ToCty(t[k])
		}
		return cty.ObjectVal(vals)
	default:
		return cty.StringVal(fmt.Sprint(t))
	}
}

// peers is the engine's modules.Peers: the play's hosts over the run's
// shared connections.
type peers struct {
	e    *engine
	self *inventories.Host
	play []string
}

func hostInfo(h *inventories.Host) modules.HostInfo {
	return modules.HostInfo{Name: h.Name, Address: h.Address, Labels: h.Labels, Groups: h.Groups, BackupRoot: h.BackupRoot}
}

func (p *peers) Self() modules.HostInfo { return hostInfo(p.self) }

func (p *peers) Lookup(name string) (modules.HostInfo, bool) {
	h, ok := p.e.opts.Inventory.Host(name)
	if !ok {
		return modules.HostInfo{}, false
	}
	return hostInfo(h), true
}

func (p *peers) Hosts() []string { return p.play }

func (p *peers) Control() modules.HostInfo { return hostInfo(p.e.control) }

func (p *peers) Serialize(key string) func() {
	return p.e.serialize(key)
}

func (p *peers) Conn(ctx context.Context, name string) (modules.Conn, error) {
	h, ok := p.e.opts.Inventory.Host(name)
	if !ok {
		return nil, fmt.Errorf("host %q is not in the inventory", name)
	}
	return p.e.connect(ctx, h)
}
