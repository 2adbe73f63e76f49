package playbooks

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// SensitiveMark is the cty mark carried by the values of sensitive variables
// and by everything computed from them. Module arguments with this mark are
// added to the run's modules.Secrets before they are decoded.
const SensitiveMark = "sensitive"

// Names of the variables an expression can read.
const (
	rootVar    = "var"
	rootLocal  = "local"
	rootHost   = "host"
	rootHosts  = "hosts"
	rootResult = "result"
	rootSelf   = "self"
	rootRun    = "run"
	rootPath   = "path"
)

// hostAttrs are the attributes of a host object, as host.* reads them.
var hostAttrs = []string{"name", "address", "port", "user", "labels", "vars", "groups"}

// hostValue is the object host and hosts[name] hold for one inventory host.
func hostValue(h *inventories.Host) cty.Value {
	labels := cty.MapValEmpty(cty.String)
	if len(h.Labels) > 0 {
		m := make(map[string]cty.Value, len(h.Labels))
		for k, v := range h.Labels {
			m[k] = cty.StringVal(v)
		}
		labels = cty.MapVal(m)
	}
	vars := cty.EmptyObjectVal
	if len(h.Vars) > 0 {
		vars = cty.ObjectVal(h.Vars)
	}
	groups := cty.ListValEmpty(cty.String)
	if len(h.Groups) > 0 {
		g := make([]cty.Value, len(h.Groups))
		for i, name := range h.Groups {
			g[i] = cty.StringVal(name)
		}
		groups = cty.ListVal(g)
	}
	addr := h.Address
	if addr == "" {
		addr = h.Name
	}
	port := h.Port
	if port == 0 {
		port = 22
	}
	return cty.ObjectVal(map[string]cty.Value{
		"name":    cty.StringVal(h.Name),
		"address": cty.StringVal(addr),
		"port":    cty.NumberIntVal(int64(port)),
		"user":    cty.StringVal(h.User),
		"labels":  labels,
		"vars":    vars,
		"groups":  groups,
	})
}

// resultsValue turns registered results into the result object: host name →
// register name → value. Every host in names gets an entry, empty if it
// registered nothing yet.
func resultsValue(names []string, results map[string]map[string]cty.Value) cty.Value {
	out := make(map[string]cty.Value, len(names)+len(results))
	for _, n := range names {
		out[n] = cty.EmptyObjectVal
	}
	for host, regs := range results {
		if len(regs) == 0 {
			out[host] = cty.EmptyObjectVal
			continue
		}
		out[host] = cty.ObjectVal(regs)
	}
	return cty.ObjectVal(out)
}

// evalState is shared by every expression of one module decode.
type evalState struct {
	// validate replaces values not known before the run with placeholders of
	// the argument's type, so that the rest can still be checked.
	validate bool
	// precheck, in validation, checks an expression's references before it
	// is evaluated; false makes it evaluate as unknown without more errors.
	precheck func(hcl.Expression) bool
	// unknown is set when some argument was not known.
	unknown bool
	// failed holds expressions that reported errors while evaluating.
	failed map[hcl.Range]bool
	// sensitive collects the values marked sensitive.
	sensitive []string
	// types, when set, keeps typesOf's answers, shared by a compile's steps.
	types map[reflect.Type]*schemaTypes
}

// argBody wraps a step body so that gohcl decodes evaluated, unmarked values:
// each attribute is evaluated once with ctx, sensitive parts are collected
// and unmarked, and unknown values become typed placeholders in validation.
type argBody struct {
	body  hcl.Body
	ctx   *hcl.EvalContext
	types *schemaTypes
	st    *evalState
}

func (b *argBody) Content(schema *hcl.BodySchema) (*hcl.BodyContent, hcl.Diagnostics) {
	c, diags := b.body.Content(schema)
	return b.wrapContent(c), diags
}

func (b *argBody) PartialContent(schema *hcl.BodySchema) (*hcl.BodyContent, hcl.Body, hcl.Diagnostics) {
	c, remain, diags := b.body.PartialContent(schema)
	if remain != nil {
		remain = &argBody{body: remain, ctx: b.ctx, types: b.types, st: b.st}
	}
	return b.wrapContent(c), remain, diags
}

func (b *argBody) JustAttributes() (hcl.Attributes, hcl.Diagnostics) {
	attrs, diags := b.body.JustAttributes()
	out := make(hcl.Attributes, len(attrs))
	for n, a := range attrs {
		out[n] = b.wrapAttr(a)
	}
	return out, diags
}

func (b *argBody) MissingItemRange() hcl.Range { return b.body.MissingItemRange() }

func (b *argBody) wrapContent(c *hcl.BodyContent) *hcl.BodyContent {
	if c == nil {
		return nil
	}
	out := &hcl.BodyContent{
		Attributes:       make(hcl.Attributes, len(c.Attributes)),
		MissingItemRange: c.MissingItemRange,
	}
	for n, a := range c.Attributes {
		out.Attributes[n] = b.wrapAttr(a)
	}
	for _, blk := range c.Blocks {
		nb := *blk
		nb.Body = &argBody{body: blk.Body, ctx: b.ctx, types: b.types.block(blk.Type), st: b.st}
		out.Blocks = append(out.Blocks, &nb)
	}
	return out
}

func (b *argBody) wrapAttr(a *hcl.Attribute) *hcl.Attribute {
	na := *a
	ty := b.types.attr(a.Name)
	na.Expr = evaluate(a.Expr, b.ctx, ty, b.st)
	return &na
}

// evaluate evaluates expr once and returns an expression that replays the
// result.
func evaluate(expr hcl.Expression, ctx *hcl.EvalContext, ty cty.Type, st *evalState) hcl.Expression {
	if st.precheck != nil && !st.precheck(expr) {
		st.unknown = true
		return &evaluatedExpr{Expression: expr, val: placeholderOrUnknown(ty)}
	}
	val, diags := expr.Value(ctx)
	if diags.HasErrors() {
		st.failed[expr.Range()] = true
		return &evaluatedExpr{Expression: expr, val: placeholderOrUnknown(ty), diags: diags}
	}
	if val.ContainsMarked() {
		st.sensitive = append(st.sensitive, sensitiveStrings(val)...)
		val, _ = val.UnmarkDeep()
	}
	if d := checkValue(expr, val); d != nil {
		st.failed[expr.Range()] = true
		return &evaluatedExpr{Expression: expr, val: placeholderOrUnknown(ty), diags: d}
	}
	if !val.IsWhollyKnown() {
		if !st.validate {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Value not known",
				Detail:   "This argument's value is not known yet; it may read a result that no step has registered.",
				Subject:  expr.Range().Ptr(),
			})
			st.failed[expr.Range()] = true
			return &evaluatedExpr{Expression: expr, val: placeholderOrUnknown(ty), diags: diags}
		}
		st.unknown = true
		if ty != cty.NilType && ty != cty.DynamicPseudoType {
			if _, err := convert.Convert(val, ty); err != nil {
				st.failed[expr.Range()] = true
				diags = append(diags, &hcl.Diagnostic{
					Severity:    hcl.DiagError,
					Summary:     "Unsuitable value type",
					Detail:      fmt.Sprintf("Unsuitable value: %s", err),
					Subject:     expr.StartRange().Ptr(),
					Context:     expr.Range().Ptr(),
					Expression:  expr,
					EvalContext: ctx,
				})
			}
			val = placeholder(ty)
		}
	}
	return &evaluatedExpr{Expression: expr, val: val, diags: diags}
}

// MaxValueSize bounds the value of one expression (a module argument, a
// local, a play setting), in bytes of strings plus a few per element.
const MaxValueSize = 32 << 20

// checkValue refuses a value no module should get: one holding a NUL byte
// or larger than MaxValueSize.
func checkValue(expr hcl.Expression, val cty.Value) hcl.Diagnostics {
	switch {
	case inventories.HasNUL(val):
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid value",
			Detail:   "This value holds a NUL byte, which no path, command or file content may carry.",
			Subject:  expr.Range().Ptr(),
		}}
	case inventories.ValueSize(val, MaxValueSize) > MaxValueSize:
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Value too large",
			Detail:   fmt.Sprintf("This value is larger than %d MiB.", MaxValueSize>>20),
			Subject:  expr.Range().Ptr(),
		}}
	}
	return nil
}

// evaluatedExpr is an expression evaluated ahead of decoding.
type evaluatedExpr struct {
	hcl.Expression
	val   cty.Value
	diags hcl.Diagnostics
}

func (e *evaluatedExpr) Value(*hcl.EvalContext) (cty.Value, hcl.Diagnostics) { return e.val, e.diags }

// schemaTypes are the cty types of a module struct's attributes, and of its
// nested blocks' attributes.
type schemaTypes struct {
	attrs  map[string]cty.Type
	blocks map[string]*schemaTypes
}

func (s *schemaTypes) attr(name string) cty.Type {
	if s == nil {
		return cty.NilType
	}
	return s.attrs[name]
}

func (s *schemaTypes) block(name string) *schemaTypes {
	if s == nil {
		return nil
	}
	return s.blocks[name]
}

var (
	ctyValueType = reflect.TypeOf(cty.Value{})
	exprType     = reflect.TypeOf((*hcl.Expression)(nil)).Elem()
)

// typesOf reads the attribute types of a gohcl-tagged struct type.
func typesOf(t reflect.Type) *schemaTypes {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	s := &schemaTypes{attrs: map[string]cty.Type{}, blocks: map[string]*schemaTypes{}}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("hcl")
		if !ok {
			continue
		}
		name, kind, _ := strings.Cut(tag, ",")
		switch kind {
		case "", "optional", "attr":
			switch {
			case f.Type == ctyValueType:
				s.attrs[name] = cty.DynamicPseudoType
			case f.Type.Kind() == reflect.Interface || f.Type == exprType:
				// hcl.Expression and the like: decoded by gohcl as they are.
			default:
				if ty, err := gocty.ImpliedType(reflect.Zero(f.Type).Interface()); err == nil {
					s.attrs[name] = ty
				}
			}
		case "block":
			et := f.Type
			for et.Kind() == reflect.Pointer || et.Kind() == reflect.Slice {
				et = et.Elem()
			}
			s.blocks[name] = typesOf(et)
		}
	}
	return s
}

// placeholder is a known value of type ty, standing in for one not known
// before the run.
func placeholder(ty cty.Type) cty.Value {
	switch {
	case ty == cty.String:
		return cty.StringVal("")
	case ty == cty.Number:
		return cty.Zero
	case ty == cty.Bool:
		return cty.False
	case ty.IsListType():
		return cty.ListValEmpty(ty.ElementType())
	case ty.IsSetType():
		return cty.SetValEmpty(ty.ElementType())
	case ty.IsMapType():
		return cty.MapValEmpty(ty.ElementType())
	case ty.IsObjectType():
		attrs := map[string]cty.Value{}
		for n, at := range ty.AttributeTypes() {
			attrs[n] = placeholder(at)
		}
		return cty.ObjectVal(attrs)
	case ty.IsTupleType():
		var elems []cty.Value
		for _, et := range ty.TupleElementTypes() {
			elems = append(elems, placeholder(et))
		}
		if len(elems) == 0 {
			return cty.EmptyTupleVal
		}
		return cty.TupleVal(elems)
	default:
		return cty.DynamicVal
	}
}

func placeholderOrUnknown(ty cty.Type) cty.Value {
	if ty == cty.NilType {
		return cty.DynamicVal
	}
	return placeholder(ty)
}

// sensitiveStrings lists the primitive values under every part of v marked
// sensitive, as strings.
func sensitiveStrings(v cty.Value) []string {
	unmarked, pvms := v.UnmarkDeepWithPaths()
	var out []string
	for _, pvm := range pvms {
		if _, ok := pvm.Marks[SensitiveMark]; !ok {
			continue
		}
		sub, err := pvm.Path.Apply(unmarked)
		if err != nil {
			continue
		}
		out = append(out, primitiveStrings(sub)...)
	}
	return out
}

// primitiveStrings lists every known, non-null primitive in v as a string.
func primitiveStrings(v cty.Value) []string {
	var out []string
	_ = cty.Walk(v, func(_ cty.Path, v cty.Value) (bool, error) {
		if !v.IsKnown() || v.IsNull() || !v.Type().IsPrimitiveType() {
			return true, nil
		}
		if s, err := convert.Convert(v, cty.String); err == nil {
			out = append(out, s.AsString())
		}
		return true, nil
	})
	return out
}

// sensitiveFields lists the string values of the fields tagged
// `sensitive:"true"` in a decoded module struct, nested blocks included.
func sensitiveFields(m any) []string {
	var out []string
	var walk func(v reflect.Value, sensitive bool)
	walk = func(v reflect.Value, sensitive bool) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), sensitive)
			}
		case reflect.String:
			if sensitive {
				out = append(out, v.String())
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), sensitive)
			}
		case reflect.Map:
			keys := v.MapKeys()
			sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
			for _, k := range keys {
				walk(v.MapIndex(k), sensitive)
			}
		case reflect.Struct:
			if v.Type() == ctyValueType {
				if sensitive {
					cv := v.Interface().(cty.Value)
					cv, _ = cv.UnmarkDeep()
					out = append(out, primitiveStrings(cv)...)
				}
				return
			}
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				if !f.IsExported() {
					continue
				}
				if _, ok := f.Tag.Lookup("hcl"); !ok {
					continue
				}
				walk(v.Field(i), sensitive || f.Tag.Get("sensitive") == "true")
			}
		}
	}
	walk(reflect.ValueOf(m), false)
	return out
}

// decodeModule decodes body into a fresh module of info, with ctx. It returns
// the module, the diagnostics, and whether some argument was not known
// (validation only).
func decodeModule(info modules.Info, body hcl.Body, ctx *hcl.EvalContext, st *evalState) (modules.Module, hcl.Diagnostics) {
	m := info.New()
	rv := reflect.ValueOf(m)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Unusable module",
			Detail:   fmt.Sprintf("Module %q does not decode from HCL: its New must return a pointer to a struct.", info.Name),
			Subject:  body.MissingItemRange().Ptr(),
		}}
	}
	if st.failed == nil {
		st.failed = map[hcl.Range]bool{}
	}
	types, ok := st.types[rv.Type()]
	if !ok {
		types = typesOf(rv.Type())
		if st.types != nil {
			st.types[rv.Type()] = types
		}
	}
	wrapped := &argBody{body: body, ctx: ctx, types: types, st: st}
	diags := gohcl.DecodeBody(wrapped, nil, m)
	// gohcl adds "Unsuitable value type" for an expression that had already
	// failed to evaluate; keep the first error only.
	var out hcl.Diagnostics
	for _, d := range diags {
		if d.Summary == "Unsuitable value type" && d.Context != nil && st.failed[*d.Context] && d.Expression == nil {
			continue
		}
		out = append(out, d)
	}
	return m, out
}
