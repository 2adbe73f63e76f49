package playbooks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/lock"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

// EnvPrefix prefixes the environment variables that set playbook variables:
// IKLIM_VAR_redis_password sets var.redis_password. -e settings win over
// them, and they win over defaults.
const EnvPrefix = "IKLIM_VAR_"

// Options are what Compile needs besides the playbook.
type Options struct {
	// Inventory provides the hosts of each play, which Compile validates one
	// by one, and the host and hosts objects. Without one, steps are checked
	// against an unknown host, and at run time hosts holds only the current
	// host.
	Inventory *inventories.Inventory
	// ExtraVars are the -e key=value settings. A value is read as an HCL
	// literal (number, bool, list, object, quoted string) when it is one,
	// else as a string, then converted to the variable's type.
	ExtraVars map[string]string
	// Secrets receives every sensitive value: sensitive variables, module
	// arguments computed from them, and fields tagged `sensitive:"true"`.
	// It also redacts diagnostics. Nil means a private set.
	Secrets *modules.Secrets
	// Modules is required: the registry a step's module is looked up in
	// (stock.Registry() has iklim's). Run the playbook with the same one.
	Modules *modules.Registry
}

// metaArgs are the step attributes that configure the step rather than its
// module.
var metaArgs = []string{"when", "register", "run_once", "delegate", "barrier", "tags", "timeout", "ignore_errors"}

// EvalError is a step whose arguments failed to evaluate at run time. Its
// text names file:line and is redacted.
type EvalError struct {
	Diags hcl.Diagnostics
	text  string
}

func (e *EvalError) Error() string { return e.text }

// Unwrap returns the diagnostics.
func (e *EvalError) Unwrap() error { return e.Diags }

type hostEntry struct {
	host *inventories.Host
	val  cty.Value
}

// compiler holds what one Compile learnt. Once Compile returns it is only
// read, by the Build and When closures, from many goroutines.
type compiler struct {
	file    *File
	inv     *inventories.Inventory
	secrets *modules.Secrets
	reg     *modules.Registry
	funcs   map[string]function.Function

	vars       map[string]*Variable
	varVal     cty.Value
	pathVal    cty.Value
	locals     map[string]*Local
	localOrder []*Local
	badLocals  map[string]bool

	hosts     map[string]hostEntry
	hostNames []string
	hostsVal  cty.Value

	// validation only
	diags       hcl.Diagnostics
	validateCtx map[string]*hcl.EvalContext
	localDiags  *hostDiags
	localHosts  map[string]bool
	// per module name and struct type, so that each is worked out once
	modInfo  map[string]*checkedModule
	modTypes map[reflect.Type]*schemaTypes
}

// Compile evaluates a parsed playbook into a runner.Playbook and validates
// all of it before any host is touched: modules and their arguments (names,
// required ones, types, the module's own Validate), references, variables,
// host patterns and durations. Every step is evaluated for every host of its
// play, with the results of earlier steps unknown. All problems are
// reported, each with file:line; the playbook is nil when there are errors.
func Compile(f *File, opts Options) (*runner.Playbook, hcl.Diagnostics) {
	if f == nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "No playbook", Detail: "Compile was given a nil File."}}
	}
	if opts.Modules == nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "No module registry",
			Detail: "Compile was given no Options.Modules; stock.Registry() has iklim's modules."}}
	}
	c := &compiler{
		file:        f,
		inv:         opts.Inventory,
		secrets:     opts.Secrets,
		reg:         opts.Modules,
		funcs:       Functions(f.Dir),
		vars:        map[string]*Variable{},
		locals:      map[string]*Local{},
		badLocals:   map[string]bool{},
		hosts:       map[string]hostEntry{},
		validateCtx: map[string]*hcl.EvalContext{},
		localDiags:  newHostDiags(0),
		localHosts:  map[string]bool{},
		modInfo:     map[string]*checkedModule{},
		modTypes:    map[reflect.Type]*schemaTypes{},
	}
	if c.secrets == nil {
		c.secrets = modules.NewSecrets()
	}
	dir, err := filepath.Abs(f.Dir)
	if err != nil {
		dir = f.Dir
	}
	c.pathVal = cty.ObjectVal(map[string]cty.Value{"dir": cty.StringVal(dir), "file": cty.StringVal(f.Path)})
	c.indexHosts()
	c.compileVariables(opts.ExtraVars)
	c.orderLocals()

	pb := &runner.Playbook{File: f.Path, Lock: c.compileLock()}
	regs := &registers{names: map[string]int{}, unregistered: map[string]hcl.Range{}, all: allRegisters(f)}
	for i, p := range f.Plays {
		regs.play = i
		pb.Plays = append(pb.Plays, c.compilePlay(p, regs))
	}
	c.localDiags.total = len(c.localHosts)
	c.diags = append(c.diags, c.localDiags.flush()...)

	diags := c.finish(c.diags)
	// The Build and When closures keep c for the run: drop what only
	// validation needed (a context per host), so that memory does not stay
	// proportional to hosts times locals.
	c.diags, c.validateCtx, c.localDiags, c.localHosts = nil, nil, nil, nil
	if diags.HasErrors() {
		return nil, diags
	}
	return pb, diags
}

// finish redacts and orders diagnostics by position.
func (c *compiler) finish(diags hcl.Diagnostics) hcl.Diagnostics {
	out := make(hcl.Diagnostics, len(diags))
	for i, d := range diags {
		nd := *d
		nd.Summary = c.secrets.Redact(d.Summary)
		nd.Detail = c.secrets.Redact(d.Detail)
		out[i] = &nd
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Subject, out[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
	return out
}

func (c *compiler) errorf(rng hcl.Range, summary, format string, args ...any) {
	c.diags = append(c.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng.Ptr(),
	})
}

func (c *compiler) indexHosts() {
	if c.inv == nil {
		c.hostsVal = cty.DynamicVal
		return
	}
	all := map[string]cty.Value{}
	for _, h := range c.inv.Hosts {
		v := hostValue(h)
		c.hosts[h.Name] = hostEntry{host: h, val: v}
		c.hostNames = append(c.hostNames, h.Name)
		all[h.Name] = v
	}
	c.hostsVal = cty.ObjectVal(all)
}

func (c *compiler) knownHost(name string) bool {
	if c.inv == nil {
		return true
	}
	_, ok := c.hosts[name]
	return ok
}

func (c *compiler) varNames() []string {
	out := make([]string, 0, len(c.vars))
	for n := range c.vars {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (c *compiler) localNames() []string {
	out := make([]string, 0, len(c.locals))
	for n := range c.locals {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// compileVariables settles every variable: -e, then IKLIM_VAR_*, then the
// default; sensitive values are marked and added to the secrets.
func (c *compiler) compileVariables(extra map[string]string) {
	vals := map[string]cty.Value{}
	constCtx := &hcl.EvalContext{Functions: c.funcs}
	for _, v := range c.file.Variables {
		c.vars[v.Name] = v
		var def cty.Value
		if v.Default != nil {
			if refs := v.Default.Variables(); len(refs) > 0 {
				c.errorf(refs[0].SourceRange(), "Variables not allowed", "A variable's default must be a constant; set it with -e or %s%s instead.", EnvPrefix, v.Name)
				def = cty.DynamicVal
			} else {
				var d hcl.Diagnostics
				def, d = v.Default.Value(constCtx)
				c.diags = append(c.diags, d...)
			}
		}

		val := cty.DynamicVal
		var from string
		raw, set := extra[v.Name]
		if set {
			from = fmt.Sprintf("-e %s=…", v.Name)
		} else if raw, set = os.LookupEnv(EnvPrefix + v.Name); set {
			from = "$" + EnvPrefix + v.Name
		}
		subject := v.DeclRange
		switch {
		case set:
			val = extraValue(raw, v, v.Default != nil && def.Type() == cty.String)
		case v.Default != nil:
			val = def
			subject = v.Default.Range()
			from = "the default"
		default:
			c.errorf(v.DeclRange, "Missing required variable",
				"Variable %q has no default; set it with -e %s=VALUE or the environment variable %s%s.", v.Name, v.Name, EnvPrefix, v.Name)
			val = cty.UnknownVal(v.Type) // its uses are still type-checked
		}
		if v.TypeSet && val.IsWhollyKnown() {
			cv, err := convert.Convert(val, v.Type)
			if err != nil {
				c.errorf(subject, "Invalid value for variable", "The value of variable %q from %s is not a %s: %s.", v.Name, from, v.Type.FriendlyName(), err)
				cv = cty.UnknownVal(v.Type)
			}
			val = cv
		}
		if v.Sensitive {
			c.secrets.Add(primitiveStrings(val)...)
			val = val.Mark(SensitiveMark)
		}
		vals[v.Name] = val
	}
	names := make([]string, 0, len(extra))
	for k := range extra {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if _, ok := c.vars[k]; !ok {
			c.diags = append(c.diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Undeclared variable",
				Detail:   fmt.Sprintf("-e sets %q, but the playbook %s declares no variable %q.%s", k, c.file.Path, k, suggestion(k, c.varNames())),
			})
		}
	}
	c.varVal = cty.ObjectVal(vals)
}

// extraValue reads a -e or environment value. A variable of type string (or
// with a string default and no type) takes it verbatim; otherwise an HCL
// literal is taken as such and anything else is a string.
func extraValue(raw string, v *Variable, stringDefault bool) cty.Value {
	if v.TypeSet && v.Type == cty.String || !v.TypeSet && stringDefault {
		return cty.StringVal(raw)
	}
	if inventories.CheckSource([]byte(raw), "-e").HasErrors() {
		return cty.StringVal(raw) // not parsed: it could overflow the stack
	}
	expr, diags := hclsyntax.ParseExpression([]byte(raw), "-e", hcl.InitialPos)
	if diags.HasErrors() || len(expr.Variables()) > 0 || !isLiteral(expr) {
		return cty.StringVal(raw)
	}
	val, diags := expr.Value(nil)
	if diags.HasErrors() || val.IsNull() || !val.IsWhollyKnown() {
		return cty.StringVal(raw)
	}
	return val
}

// isLiteral reports whether expr is written as a literal (not arithmetic:
// 2026-11-21 stays a string).
func isLiteral(expr hclsyntax.Expression) bool {
	switch e := expr.(type) {
	case *hclsyntax.LiteralValueExpr, *hclsyntax.TupleConsExpr, *hclsyntax.ObjectConsExpr:
		return true
	case *hclsyntax.TemplateExpr:
		return e.IsStringLiteral()
	case *hclsyntax.UnaryOpExpr:
		_, ok := e.Val.(*hclsyntax.LiteralValueExpr)
		return ok && e.Op == hclsyntax.OpNegate
	}
	return false
}

// orderLocals checks the locals' references and orders them so that each
// comes after the locals it reads.
func (c *compiler) orderLocals() {
	deps := map[string][]string{}
	for _, l := range c.file.Locals {
		c.locals[l.Name] = l
	}
	for _, l := range c.file.Locals {
		rc := c.checkRefs(l.Expr, scopeLocal, &registers{}, fmt.Sprintf("Local value %q", l.Name))
		c.diags = append(c.diags, rc.diags...)
		if rc.diags.HasErrors() {
			c.badLocals[l.Name] = true
		}
		for _, t := range l.Expr.Variables() {
			if t.RootName() != rootLocal {
				continue
			}
			if n, ok := staticKey(t[1:], 0); ok && c.locals[n] != nil {
				deps[l.Name] = append(deps[l.Name], n)
			}
		}
	}
	const visiting, done = 1, 2
	state := map[string]int{}
	var visit func(n string, path []string)
	visit = func(n string, path []string) {
		switch state[n] {
		case done:
			return
		case visiting:
			l := c.locals[n]
			c.errorf(l.Range, "Circular reference", "Local value %q refers to itself: %s.", n, strings.Join(append(path, n), " → "))
			c.badLocals[n] = true
			return
		}
		state[n] = visiting
		for _, d := range deps[n] {
			visit(d, append(path, n))
		}
		state[n] = done
		c.localOrder = append(c.localOrder, c.locals[n])
	}
	for _, l := range c.file.Locals {
		visit(l.Name, nil)
	}
}

// evalContext is the context of one host and step. h nil means an unknown
// host (no inventory, or validation of a step no host runs).
func (c *compiler) evalContext(h *inventories.Host, results, self, check cty.Value) (*hcl.EvalContext, hcl.Diagnostics) {
	hv, hosts := cty.DynamicVal, c.hostsVal
	if h != nil {
		if e, ok := c.hosts[h.Name]; ok && e.host == h {
			hv = e.val
		} else {
			hv = hostValue(h)
		}
		if c.inv == nil {
			hosts = cty.ObjectVal(map[string]cty.Value{h.Name: hv})
		}
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{
			rootVar:    c.varVal,
			rootPath:   c.pathVal,
			rootHost:   hv,
			rootHosts:  hosts,
			rootResult: results,
			rootSelf:   self,
			rootRun:    cty.ObjectVal(map[string]cty.Value{"check": check}),
			rootLocal:  cty.EmptyObjectVal,
		},
		Functions: c.funcs,
	}
	var diags hcl.Diagnostics
	if len(c.localOrder) > 0 {
		vals := map[string]cty.Value{}
		for _, l := range c.localOrder {
			ctx.Variables[rootLocal] = cty.ObjectVal(vals)
			if c.badLocals[l.Name] {
				vals[l.Name] = cty.DynamicVal
				continue
			}
			v, d := l.Expr.Value(ctx)
			if !d.HasErrors() && inventories.ValueSize(v, MaxValueSize) > MaxValueSize {
				d = append(d, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Value too large",
					Detail:   fmt.Sprintf("The local value %q is larger than %d MiB.", l.Name, MaxValueSize>>20),
					Subject:  l.Expr.Range().Ptr(),
				})
			}
			diags = append(diags, d...)
			if d.HasErrors() {
				v = cty.DynamicVal
			}
			vals[l.Name] = v
		}
		ctx.Variables[rootLocal] = cty.ObjectVal(vals)
	}
	return ctx, diags
}

// validationContext is the context a host's steps are validated in: results
// and check mode unknown. Locals are checked once per host.
func (c *compiler) validationContext(h *inventories.Host) *hcl.EvalContext {
	name := ""
	if h != nil {
		name = h.Name
	}
	if ctx, ok := c.validateCtx[name]; ok {
		return ctx
	}
	ctx, diags := c.evalContext(h, cty.DynamicVal, cty.DynamicVal, cty.UnknownVal(cty.Bool))
	c.localDiags.add(name, diags)
	if name != "" {
		c.localHosts[name] = true
	}
	c.validateCtx[name] = ctx
	return ctx
}

// runtimeContext is the context of a step on a host at run time.
// readsResult says whether the step's expressions read result at all: the
// result object holds every host, so building it for each step on each host
// would cost hosts² over a run; without it, result is left unknown.
func (c *compiler) runtimeContext(sc *runner.StepContext, readsResult bool) (*hcl.EvalContext, hcl.Diagnostics) {
	self := cty.EmptyObjectVal
	if sc.Host != nil {
		if regs := sc.Results[sc.Host.Name]; len(regs) > 0 {
			self = cty.ObjectVal(regs)
		}
	}
	results := cty.DynamicVal
	if readsResult {
		results = resultsValue(c.hostNames, sc.Results)
	}
	return c.evalContext(sc.Host, results, self, cty.BoolVal(sc.Check))
}

// readsResults reports whether expr or body (either may be nil) may read a
// registered result: through self or result (locals cannot read them).
func readsResults(expr hcl.Expression, body hcl.Body) bool {
	return readsRoot(rootSelf, expr, body) || readsRoot(rootResult, expr, body)
}

// readsRoot reports whether expr, or any expression of body (nil for
// none), reads the variable root; true when it cannot tell.
func readsRoot(root string, expr hcl.Expression, body hcl.Body) bool {
	if expr != nil {
		for _, t := range expr.Variables() {
			if t.RootName() == root {
				return true
			}
		}
	}
	if body == nil {
		return false
	}
	sb, ok := syntaxBody(body)
	if !ok {
		return true
	}
	for _, a := range sb.Attributes {
		if readsRoot(root, a.Expr, nil) {
			return true
		}
	}
	for _, b := range sb.Blocks {
		if readsRoot(root, nil, b.Body) {
			return true
		}
	}
	return false
}

func (c *compiler) evalError(diags hcl.Diagnostics) error {
	return &EvalError{Diags: diags, text: c.secrets.Redact(diags.Error())}
}

// static evaluates a play, lock or meta-argument expression, which may read
// only var.*, and converts it to ty.
func (c *compiler) static(expr hcl.Expression, what string, ty cty.Type) (cty.Value, bool) {
	rc := c.checkRefs(expr, scopeStatic, nil, what)
	c.diags = append(c.diags, rc.diags...)
	if rc.diags.HasErrors() {
		return cty.NilVal, false
	}
	v, d := expr.Value(&hcl.EvalContext{Variables: map[string]cty.Value{rootVar: c.varVal, rootPath: c.pathVal}, Functions: c.funcs})
	c.diags = append(c.diags, d...)
	if d.HasErrors() {
		return cty.NilVal, false
	}
	v, _ = v.UnmarkDeep()
	if d := checkValue(expr, v); d != nil {
		c.diags = append(c.diags, d...)
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		return cty.NilVal, false // a variable already reported as missing
	}
	if v.IsNull() {
		c.errorf(expr.Range(), "Invalid value", "%s must not be null.", what)
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil {
		c.errorf(expr.Range(), "Incorrect value type", "%s must be a %s: %s.", what, ty.FriendlyName(), err)
		return cty.NilVal, false
	}
	return cv, true
}

func (c *compiler) staticString(expr hcl.Expression, what string) (string, bool) {
	v, ok := c.static(expr, what, cty.String)
	if !ok {
		return "", false
	}
	return v.AsString(), true
}

func (c *compiler) staticBool(expr hcl.Expression, what string) bool {
	v, ok := c.static(expr, what, cty.Bool)
	return ok && v.True()
}

func (c *compiler) staticInt(expr hcl.Expression, what string) (int, bool) {
	v, ok := c.static(expr, what, cty.Number)
	if !ok {
		return 0, false
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != 0 || i < 0 || i > 1<<31 {
		c.errorf(expr.Range(), "Invalid number", "%s must be a whole number, 0 or more.", what)
		return 0, false
	}
	return int(i), true
}

func (c *compiler) staticDuration(expr hcl.Expression, what string) (time.Duration, bool) {
	s, ok := c.staticString(expr, what)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.errorf(expr.Range(), "Invalid duration", "%s must be a duration such as \"30s\", \"5m\" or \"1h30m\"; %q is not.", what, s)
		return 0, false
	}
	if d < 0 {
		c.errorf(expr.Range(), "Invalid duration", "%s must not be negative.", what)
		return 0, false
	}
	return d, true
}

func (c *compiler) staticStrings(expr hcl.Expression, what string) []string {
	v, ok := c.static(expr, what, cty.List(cty.String))
	if !ok {
		return nil
	}
	var out []string
	for _, e := range v.AsValueSlice() {
		if e.IsNull() {
			c.errorf(expr.Range(), "Invalid value", "%s must not contain null.", what)
			return nil
		}
		out = append(out, e.AsString())
	}
	return out
}

func (c *compiler) compileLock() *runner.LockSpec {
	l := c.file.Lock
	if l == nil {
		return nil
	}
	spec := &runner.LockSpec{Name: l.Name}
	if err := lock.CheckName(l.Name); err != nil {
		c.errorf(l.NameRange, "Invalid lock name", "The %s.", err)
	}
	if l.Host != nil {
		if h, ok := c.staticString(l.Host, "The lock host"); ok {
			spec.Host = h
			if !c.knownHost(h) {
				c.errorf(l.Host.Range(), "Unknown host", "The lock host %q is not in the inventory.%s", h, suggestion(h, c.hostNames))
			}
		}
	}
	if l.Wait != nil {
		spec.Wait, _ = c.staticDuration(l.Wait, "The lock wait")
	}
	if l.TTL != nil {
		if ttl, ok := c.staticDuration(l.TTL, "The lock ttl"); ok {
			if ttl < time.Second {
				c.errorf(l.TTL.Range(), "Invalid duration", "The lock ttl must be at least 1s: a holder heartbeats within it.")
			}
			spec.TTL = ttl
		}
	}
	if l.TakeOverStale != nil {
		spec.TakeOverStale = c.staticBool(l.TakeOverStale, "take_over_stale")
	}
	return spec
}

func (c *compiler) compilePlay(p *Play, regs *registers) runner.Play {
	rp := runner.Play{Name: p.Name}
	var hosts []*inventories.Host
	if p.Hosts != nil {
		if pattern, ok := c.staticString(p.Hosts, "The hosts pattern"); ok {
			rp.Hosts = pattern
			if _, err := inventories.ParsePattern(pattern); err != nil {
				c.errorf(p.Hosts.Range(), "Invalid host pattern", "%s.", err)
			} else if c.inv != nil {
				sel, err := c.inv.Select(pattern)
				switch {
				case err != nil:
					c.errorf(p.Hosts.Range(), "Invalid host pattern", "%s (inventory %s).", err, c.inv.File)
				case len(sel) == 0:
					c.errorf(p.Hosts.Range(), "No hosts selected", "The pattern %q selects no host of the inventory %s.", pattern, c.inv.File)
				}
				hosts = sel
			}
		}
	}
	if p.Serial != nil {
		rp.Serial, _ = c.staticInt(p.Serial, "serial")
	}
	if len(hosts) == 0 {
		hosts = []*inventories.Host{nil} // check against an unknown host
	}
	rp.Steps = make([]runner.Step, 0, len(p.Steps))
	for _, s := range p.Steps {
		rp.Steps = append(rp.Steps, c.compileStep(s, hosts, regs))
	}
	return rp
}

// metaSchema is the step meta-arguments. They are decoded before the
// module's arguments and their names are reserved: a module cannot take an
// argument named like one (see CheckModule).
var metaSchema = func() *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, name := range metaArgs {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: name})
	}
	return s
}()

// stepArgs is a step's body (from Load, without module) without the
// meta-arguments: the module's arguments.
func stepArgs(body hcl.Body) hcl.Body {
	return &hiddenBody{body: body, hide: metaSchema}
}

// ReservedArgs are the step attribute names no module argument may have:
// module and the step meta-arguments.
func ReservedArgs() []string {
	return append([]string{"module"}, metaArgs...)
}

// CheckModule reports whether a module's schema can be used in a playbook:
// New returns a pointer to a gohcl-tagged struct, and no argument or block
// of it is named like a step meta-argument, which the step would take.
func CheckModule(info modules.Info) (err error) {
	m := info.New()
	rv := reflect.ValueOf(m)
	if m == nil || rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("module %s: New must return a pointer to a struct", info.Name)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("module %s: not a gohcl struct: %v", info.Name, r)
		}
	}()
	schema, _ := gohcl.ImpliedBodySchema(m)
	var names []string
	for _, a := range schema.Attributes {
		names = append(names, a.Name)
	}
	for _, b := range schema.Blocks {
		names = append(names, b.Type)
	}
	var taken []string
	for _, n := range names {
		if slices.Contains(ReservedArgs(), n) {
			taken = append(taken, n)
		}
	}
	if len(taken) > 0 {
		return fmt.Errorf("module %s: argument %s is named like a step meta-argument (reserved: %s)", info.Name, strings.Join(taken, ", "), strings.Join(ReservedArgs(), ", "))
	}
	return nil
}

// allRegisters maps every register name a step of f declares (a literal
// string) to the first step declaring it. compileStep reports bad ones.
func allRegisters(f *File) map[string]stepRef {
	all := map[string]stepRef{}
	schema := &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "register"}}}
	for _, p := range f.Plays {
		for _, s := range p.Steps {
			content, _, _ := s.Body.PartialContent(schema)
			a, ok := content.Attributes["register"]
			if !ok {
				continue
			}
			v, d := a.Expr.Value(nil)
			if d.HasErrors() || !v.IsWhollyKnown() || v.IsNull() || v.Type() != cty.String {
				continue
			}
			if _, seen := all[v.AsString()]; !seen {
				all[v.AsString()] = stepRef{name: s.Name, where: s.DeclRange}
			}
		}
	}
	return all
}

// checkedModule is a registered module and what CheckModule says of it,
// worked out once per module name; the steps share it.
type checkedModule struct {
	info  modules.Info
	known bool
	err   error
}

func (c *compiler) compileStep(s *Step, hosts []*inventories.Host, regs *registers) runner.Step {
	rs := runner.Step{Name: s.Name, Module: s.Module, Source: rangeLine(s.DeclRange)}
	regs.current = s.DeclRange
	mod, done := c.modInfo[s.Module]
	if !done {
		mod = &checkedModule{}
		mod.info, mod.known = c.reg.Lookup(s.Module)
		if mod.known {
			mod.err = CheckModule(mod.info)
		}
		c.modInfo[s.Module] = mod
	}
	info, known := &mod.info, mod.known
	if s.Module != "" && !known {
		c.errorf(s.ModuleRange, "Unknown module", "There is no module named %q.%s", s.Module, suggestion(s.Module, c.reg.Names()))
	}
	if known && mod.err != nil {
		c.errorf(s.ModuleRange, "Unusable module", "%s; the module must rename it.", mod.err)
		known = false
	}
	content, _, d := s.Body.PartialContent(metaSchema)
	c.diags = append(c.diags, d...)
	args := stepArgs(s.Body)
	attrs := content.Attributes
	if a, ok := attrs["register"]; ok {
		if name, ok := c.staticString(a.Expr, "register"); ok {
			if !hclsyntax.ValidIdentifier(name) {
				c.errorf(a.Expr.Range(), "Invalid register name", "%q cannot be read as self.NAME: use letters, digits, underscores and dashes, starting with a letter.", name)
			}
			rs.Register = name
		}
	}
	if a, ok := attrs["run_once"]; ok {
		rs.RunOnce = c.staticBool(a.Expr, "run_once")
	}
	if a, ok := attrs["delegate"]; ok {
		rs.Delegate = c.staticBool(a.Expr, "delegate")
	}
	if a, ok := attrs["barrier"]; ok {
		rs.Barrier = c.staticBool(a.Expr, "barrier")
	}
	if a, ok := attrs["ignore_errors"]; ok {
		rs.IgnoreErrors = c.staticBool(a.Expr, "ignore_errors")
	}
	if a, ok := attrs["tags"]; ok {
		rs.Tags = c.staticStrings(a.Expr, "tags")
	}
	if a, ok := attrs["timeout"]; ok {
		rs.Timeout, _ = c.staticDuration(a.Expr, "The step timeout")
	}
	var when hcl.Expression
	if a, ok := attrs["when"]; ok {
		when = a.Expr
	}

	whenRefs := c.checkRefs(when, scopeStep, regs, "when")
	c.diags = append(c.diags, whenRefs.diags...)
	readsPeers := whenRefs.readsPeers
	checked := map[hcl.Expression]bool{}
	precheck := func(expr hcl.Expression) bool {
		ok, seen := checked[expr]
		if !seen {
			rc := c.checkRefs(expr, scopeStep, regs, "This argument")
			c.diags = append(c.diags, rc.diags...)
			readsPeers = readsPeers || rc.readsPeers
			ok = !rc.diags.HasErrors()
			checked[expr] = ok
		}
		return ok
	}

	collected := newHostDiags(len(hosts))
	validated := 0
	for _, h := range hosts {
		ctx := c.validationContext(h)
		name := ""
		if h != nil {
			name = h.Name
		}
		if when != nil && !whenRefs.diags.HasErrors() {
			run, whenKnown, d := evalWhen(when, ctx)
			collected.add(name, d)
			if !d.HasErrors() && whenKnown && !run {
				continue // skipped on this host: its arguments need not make sense here
			}
		}
		validated++
		if known {
			collected.add(name, c.validateArgs(s, *info, args, ctx, precheck))
		}
	}
	if validated == 0 && known {
		// No host runs the step as far as Compile can tell; still check its
		// arguments against an unknown host.
		ctx, _ := c.evalContext(nil, cty.DynamicVal, cty.DynamicVal, cty.UnknownVal(cty.Bool))
		collected.add("", c.validateArgs(s, *info, args, ctx, precheck))
	}
	c.diags = append(c.diags, collected.flush()...)
	rs.Barrier = rs.Barrier || readsPeers

	if rs.Register != "" {
		regs.names[rs.Register] = regs.play // the latest registration counts
	} else if _, seen := regs.unregistered[s.Name]; !seen {
		regs.unregistered[s.Name] = s.DeclRange
	}
	rs.ResultFree = !readsResults(when, nil) && !readsResults(nil, args)
	if known {
		readsResult := readsRoot(rootResult, nil, args)
		rs.Build = func(sc *runner.StepContext) (modules.Module, error) {
			return c.build(s, info, args, sc, readsResult)
		}
	}
	if when != nil {
		readsResult := readsRoot(rootResult, when, nil)
		rs.When = func(sc *runner.StepContext) (bool, error) {
			ctx, diags := c.runtimeContext(sc, readsResult)
			if diags.HasErrors() {
				return false, c.evalError(diags)
			}
			run, whenKnown, diags := evalWhen(when, ctx)
			if !diags.HasErrors() && !whenKnown {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Condition not known",
					Detail:   "The when condition has no value yet.",
					Subject:  when.Range().Ptr(),
				})
			}
			if diags.HasErrors() {
				return false, c.evalError(diags)
			}
			return run, nil
		}
	}
	return rs
}

// evalWhen evaluates a when condition; known is false when it depends on
// values not known yet.
func evalWhen(expr hcl.Expression, ctx *hcl.EvalContext) (run, known bool, diags hcl.Diagnostics) {
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return false, false, diags
	}
	v, _ = v.UnmarkDeep()
	if !v.IsKnown() {
		if _, err := convert.Convert(v, cty.Bool); err != nil {
			return false, false, whenDiag(expr, ctx, fmt.Sprintf("The when condition must be a bool: %s.", err))
		}
		return false, false, nil
	}
	if v.IsNull() {
		return false, false, whenDiag(expr, ctx, "The when condition must be true or false, not null.")
	}
	b, err := convert.Convert(v, cty.Bool)
	if err != nil {
		return false, false, whenDiag(expr, ctx, fmt.Sprintf("The when condition must be a bool: %s.", err))
	}
	return b.True(), true, nil
}

func whenDiag(expr hcl.Expression, ctx *hcl.EvalContext, detail string) hcl.Diagnostics {
	return hcl.Diagnostics{{
		Severity:    hcl.DiagError,
		Summary:     "Invalid when condition",
		Detail:      detail,
		Subject:     expr.Range().Ptr(),
		Expression:  expr,
		EvalContext: ctx,
	}}
}

// validateArgs decodes a step's module arguments for one host, with results
// unknown, and runs the module's Validate when every argument is known.
func (c *compiler) validateArgs(s *Step, info modules.Info, args hcl.Body, ctx *hcl.EvalContext, precheck func(hcl.Expression) bool) hcl.Diagnostics {
	st := &evalState{validate: true, precheck: precheck, types: c.modTypes}
	m, diags := decodeModule(info, args, ctx, st)
	c.secrets.Add(st.sensitive...)
	suggestMetaArgs(diags)
	if diags.HasErrors() || m == nil {
		return diags
	}
	c.secrets.Add(sensitiveFields(m)...)
	if st.unknown {
		return diags
	}
	if v, ok := m.(modules.Validator); ok {
		if err := v.Validate(); err != nil {
			diags = append(diags, validateDiag(s, info, args, err))
		}
	}
	if hn, ok := m.(modules.HostNamer); ok && c.inv != nil {
		diags = append(diags, c.checkHostArgs(s, info, args, hn)...)
	}
	return diags
}

// validateDiag turns a module's Validate error into a diagnostic: at the
// argument a modules.ArgError names, else at the step.
func validateDiag(s *Step, info modules.Info, args hcl.Body, err error) *hcl.Diagnostic {
	subject := s.DeclRange
	msg := err.Error()
	var ae *modules.ArgError
	if errors.As(err, &ae) {
		if rng, ok := argRange(args, ae.Arg); ok {
			subject = rng
		}
		msg = ae.Arg + ": " + ae.Err.Error()
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Invalid module arguments",
		Detail:   fmt.Sprintf("Module %s: %s.", info.Name, strings.TrimSuffix(msg, ".")),
		Subject:  subject.Ptr(),
	}
}

// argRange is the source range of a step's argument (an attribute's
// expression or a block's header) by its HCL name.
func argRange(args hcl.Body, name string) (hcl.Range, bool) {
	sb, ok := syntaxBody(args)
	if !ok {
		return hcl.Range{}, false
	}
	if a, ok := sb.Attributes[name]; ok {
		return a.Expr.Range(), true
	}
	for _, b := range sb.Blocks {
		if b.Type == name {
			return b.DefRange(), true
		}
	}
	return hcl.Range{}, false
}

// checkHostArgs checks the host names a module's arguments hold against
// the inventory; each unknown one is reported at its list element when the
// argument is a literal list, else at the argument.
func (c *compiler) checkHostArgs(s *Step, info modules.Info, args hcl.Body, hn modules.HostNamer) hcl.Diagnostics {
	var diags hcl.Diagnostics
	hostArgs := hn.HostArgs()
	argNames := make([]string, 0, len(hostArgs))
	for a := range hostArgs {
		argNames = append(argNames, a)
	}
	sort.Strings(argNames)
	for _, arg := range argNames {
		rng, ok := argRange(args, arg)
		if !ok {
			rng = s.DeclRange
		}
		for _, name := range hostArgs[arg] {
			if c.knownHost(name) {
				continue
			}
			subject := rng
			if el, ok := elementRange(args, arg, name); ok {
				subject = el
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unknown host",
				Detail:   fmt.Sprintf("Module %s: %s names the host %q, which is not in the inventory %s.%s", info.Name, arg, name, c.inv.File, suggestion(name, c.hostNames)),
				Subject:  subject.Ptr(),
			})
		}
	}
	return diags
}

// elementRange is the range of the literal element equal to value in the
// list (or the literal string) that argument arg is written as.
func elementRange(args hcl.Body, arg, value string) (hcl.Range, bool) {
	sb, ok := syntaxBody(args)
	if !ok {
		return hcl.Range{}, false
	}
	a, ok := sb.Attributes[arg]
	if !ok {
		return hcl.Range{}, false
	}
	exprs := []hclsyntax.Expression{a.Expr}
	if t, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok {
		exprs = t.Exprs
	}
	for _, e := range exprs {
		if len(e.Variables()) > 0 {
			continue
		}
		v, d := e.Value(nil)
		if !d.HasErrors() && v.IsKnown() && !v.IsNull() && v.Type() == cty.String && v.AsString() == value {
			return e.Range(), true
		}
	}
	return hcl.Range{}, false
}

// build makes the module of a step for one host at run time.
func (c *compiler) build(s *Step, info *modules.Info, args hcl.Body, sc *runner.StepContext, readsResult bool) (modules.Module, error) {
	ctx, diags := c.runtimeContext(sc, readsResult)
	if diags.HasErrors() {
		return nil, c.evalError(diags)
	}
	st := &evalState{}
	m, diags := decodeModule(*info, args, ctx, st)
	c.secrets.Add(st.sensitive...)
	if diags.HasErrors() {
		return nil, c.evalError(diags)
	}
	c.secrets.Add(sensitiveFields(m)...)
	if v, ok := m.(modules.Validator); ok {
		if err := v.Validate(); err != nil {
			at := s.DeclRange
			var ae *modules.ArgError
			if errors.As(err, &ae) {
				if rng, ok := argRange(args, ae.Arg); ok {
					at = rng
				}
			}
			return nil, fmt.Errorf("%s: module %s: %w", rangeLine(at), info.Name, err)
		}
	}
	if hn, ok := m.(modules.HostNamer); ok && c.inv != nil {
		if d := c.checkHostArgs(s, *info, args, hn); d.HasErrors() {
			return nil, c.evalError(d)
		}
	}
	return m, nil
}

var unsupportedArg = regexp.MustCompile(`^An argument named "([^"]+)" is not expected here\.$`)

// suggestMetaArgs adds a hint to "Unsupported argument" errors that look
// like a misspelt step meta-argument; hclsyntax only suggests the module's
// own arguments.
func suggestMetaArgs(diags hcl.Diagnostics) {
	for _, d := range diags {
		if d.Summary != "Unsupported argument" {
			continue
		}
		m := unsupportedArg.FindStringSubmatch(d.Detail)
		if m == nil {
			continue
		}
		if hint := suggestion(m[1], metaArgs); hint != "" {
			d.Detail += hint + " (a step meta-argument)"
		}
	}
}
