// Package playbooks reads HCL playbooks and compiles them into
// runner.Playbooks. Mistakes are hcl.Diagnostics with file:line, and Compile
// finds all of them before any host is touched.
//
// A playbook has four kinds of top-level block:
//
//	variable "image_tag" {            # input variable, read as var.image_tag
//	  type        = string            # optional type constraint
//	  default     = "1.4.2"           # none: required (-e or IKLIM_VAR_image_tag)
//	  sensitive   = false             # true: redacted from all output
//	  description = "…"
//	}
//	locals { conf_dir = "/srv/${var.app}/conf" }   # read as local.conf_dir
//	lock "prod-deploy" { host = "iklim-app-01"  wait = "5m"  ttl = "2m"  take_over_stale = false }
//	play "bootstrap" {
//	  hosts  = "swarm:!iklim-db-03"   # host pattern
//	  serial = 2                      # optional batch size
//	  step "ensure dir" {
//	    module = "file"               # registered module name
//	    path   = local.conf_dir       # every other argument goes to the module
//	    when = host.labels.type == "service"
//	    register = "dir"              # read later as self.dir or result["host"].dir
//	    run_once = false   delegate = false   barrier = false
//	    tags = ["setup"]   timeout = "30s"   ignore_errors = false
//	  }
//	}
//
// Expressions read var.NAME, local.NAME, path.dir (the playbook's directory,
// absolute) and path.file; per host also host (name, address, port, user,
// labels, vars, groups), hosts["NAME"] (every inventory host), self.REG (this
// host's registered results), result["HOST"].REG (any host's) and run.check.
// Play, lock and meta-arguments are decided once for all hosts and read only
// var and path; locals cannot read results. A step's arguments are checked
// on every host its when condition does not rule out at compile time.
//
// The step meta-arguments are module, when, register, run_once, delegate,
// barrier, tags, timeout and ignore_errors; every other attribute or block of
// a step is an argument of its module, decoded into the module's struct. The
// meta-arguments are decoded first and their names are reserved: a module
// that declares an argument with one of them is refused (CheckModule). A
// Validate error that is a modules.ArgError, and an unknown host named by a
// modules.HostNamer argument, are reported at that argument.
//
// Hostile input is refused before it is parsed or evaluated: files that are
// not regular or exceed inventories.MaxFileSize, NUL bytes, nesting and
// operator chains that would overflow the parser's stack, and function
// results or values over their size limits.
//
// A step that reads another host's result registered in the same play gets
// a barrier by itself.
//
// Handlers are written as when = self.REG.changed: every registered result
// has changed (false when the step was ok or skipped), so a step runs only
// when the step registering REG changed this host. A reference to a step
// that does not register, to a result only a later step (or the step
// itself) registers, or to a register nobody declares, is a diagnostic at
// the reference.
//
// Functions are the go-cty standard library under Terraform's names (upper,
// format, join, merge, lookup, jsonencode, regex, tolist, …), can and try,
// md5/sha1/sha256/sha512, base64encode/decode, startswith/endswith/
// strcontains, env(name), and file(path) and templatefile(path, vars) with
// paths relative to the playbook. Values of sensitive variables carry the
// "sensitive" mark; every module argument computed from one, and every
// module field tagged `sensitive:"true"`, goes into the run's Secrets.
package playbooks

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"unicode"

	"github.com/iklimco/iklim/internal/hclchunk"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/iklimco/iklim/inventories"
	"github.com/zclconf/go-cty/cty"
)

// File is a parsed playbook: its structure, with expressions left for
// Compile to evaluate.
type File struct {
	// Path is the file name the playbook was read from.
	Path string
	// Dir is the directory that file() and templatefile() paths are
	// relative to.
	Dir       string
	Variables []*Variable
	Locals    []*Local
	Lock      *Lock
	Plays     []*Play

	parser *hclparse.Parser
}

// Variable is a variable block.
type Variable struct {
	Name        string
	Description string
	// Type is the declared type constraint; cty.DynamicPseudoType if none.
	Type      cty.Type
	TypeSet   bool
	Default   hcl.Expression // nil: the variable is required
	Sensitive bool
	DeclRange hcl.Range
}

// Local is one attribute of a locals block.
type Local struct {
	Name  string
	Expr  hcl.Expression
	Range hcl.Range
}

// Lock is the lock block.
type Lock struct {
	Name          string
	Host          hcl.Expression
	Wait          hcl.Expression // may be nil
	TTL           hcl.Expression // may be nil
	TakeOverStale hcl.Expression // may be nil
	NameRange     hcl.Range
	DeclRange     hcl.Range
}

// Play is a play block.
type Play struct {
	Name      string
	Hosts     hcl.Expression
	Serial    hcl.Expression // may be nil
	Steps     []*Step
	DeclRange hcl.Range
}

// Step is a step block. Its meta-arguments and module arguments are both in
// Body; Compile tells them apart once it knows the module's schema.
type Step struct {
	Name        string
	Module      string
	ModuleRange hcl.Range
	// Body is the step's body without the module attribute.
	Body      hcl.Body
	DeclRange hcl.Range
}

// withoutModule is a step's body without its module attribute, which
// Step.Module holds. The attribute is taken out of the parsed body, which
// only the step keeps: hiding it would keep it for the step's life.
func withoutModule(b hcl.Body) hcl.Body {
	if sb, ok := b.(*hclsyntax.Body); ok {
		delete(sb.Attributes, "module")
		return sb
	}
	_, rest, _ := b.PartialContent(stepModuleSchema)
	return rest
}

// hiddenBody is body without the attributes of hide. hclsyntax hides by
// copying the body and a map of the hidden names, which a step's module
// arguments (its body without the meta-arguments) would keep for the
// step's life; this hides on each read instead, and the copy is garbage at
// once. The diagnostics are
// hclsyntax's own, as both go through its PartialContent.
type hiddenBody struct {
	body hcl.Body
	hide *hcl.BodySchema
}

func (h *hiddenBody) remain() hcl.Body {
	_, r, _ := h.body.PartialContent(h.hide) // reported when the step was parsed or compiled
	return r
}

func (h *hiddenBody) Content(schema *hcl.BodySchema) (*hcl.BodyContent, hcl.Diagnostics) {
	return h.remain().Content(schema)
}

func (h *hiddenBody) PartialContent(schema *hcl.BodySchema) (*hcl.BodyContent, hcl.Body, hcl.Diagnostics) {
	return h.remain().PartialContent(schema)
}

func (h *hiddenBody) JustAttributes() (hcl.Attributes, hcl.Diagnostics) {
	return h.remain().JustAttributes()
}

func (h *hiddenBody) MissingItemRange() hcl.Range { return h.body.MissingItemRange() }

// syntaxBody is the native-syntax body under b's hiding, for reading where
// its attributes are written.
func syntaxBody(b hcl.Body) (*hclsyntax.Body, bool) {
	if h, ok := b.(*hiddenBody); ok {
		b = h.body
	}
	sb, ok := b.(*hclsyntax.Body)
	return sb, ok
}

// Sources maps file names to the parsed files, for hcl.NewDiagnosticTextWriter.
func (f *File) Sources() map[string]*hcl.File {
	if f == nil || f.parser == nil {
		return map[string]*hcl.File{}
	}
	return f.parser.Files()
}

var fileSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "locals"},
		{Type: "lock", LabelNames: []string{"name"}},
		{Type: "play", LabelNames: []string{"name"}},
	},
}

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "default"},
		{Name: "type"},
		{Name: "sensitive"},
		{Name: "description"},
	},
}

var lockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "host", Required: true},
		{Name: "wait"},
		{Name: "ttl"},
		{Name: "take_over_stale"},
	},
}

var playSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "hosts", Required: true},
		{Name: "serial"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "step", LabelNames: []string{"name"}},
	},
}

var stepModuleSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "module", Required: true}},
}

// Load reads and parses the playbook at path. See Parse.
func Load(path string) (*File, hcl.Diagnostics) {
	return LoadWith(hclparse.NewParser(), path)
}

// LoadWith is Load with a caller-supplied parser, so that one parser can
// hold the inventory and the playbook for diagnostics (p.Files()).
func LoadWith(p *hclparse.Parser, path string) (*File, hcl.Diagnostics) {
	src, err := inventories.ReadFile(path)
	if err != nil {
		return &File{Path: path, Dir: filepath.Dir(path), parser: p}, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read playbook",
			Detail:   fmt.Sprintf("Cannot read playbook file %s: %s.", path, err),
		}}
	}
	return ParseWith(p, src, path)
}

// Parse parses a playbook's syntax and block structure; expressions are
// evaluated later, by Compile. file() and templatefile() paths are relative
// to filename's directory. The File is never nil, so that its Sources can
// render the diagnostics.
func Parse(src []byte, filename string) (*File, hcl.Diagnostics) {
	return ParseWith(hclparse.NewParser(), src, filename)
}

// ParseWith is Parse with a caller-supplied parser. The parser caches files
// by name: parsing the same filename twice returns the first result.
func ParseWith(p *hclparse.Parser, src []byte, filename string) (*File, hcl.Diagnostics) {
	f := &File{Path: filename, Dir: filepath.Dir(filename), parser: p}
	// Refused before HCL parses it: input that would overflow its stack.
	if diags := inventories.CheckSource(src, filename); diags.HasErrors() {
		return f, diags
	}
	// Read a piece at a time: the parser p keeps no syntax tree, and what
	// the steps keep of it is their bodies, not the blocks around them.
	r := &fileReader{f: f}
	r.reset()
	_, diags := hclchunk.Each(p, src, filename, r.read, r.reset)
	if diags.HasErrors() {
		return f, diags
	}
	// In file order, where hclsyntax gives the arguments in map order.
	sort.SliceStable(r.structure, func(i, j int) bool { return startByte(r.structure[i]) < startByte(r.structure[j]) })
	diags = append(diags, r.structure...)
	return f, append(diags, r.diags...)
}

func startByte(d *hcl.Diagnostic) int {
	if d.Subject == nil {
		return -1
	}
	return d.Subject.Start.Byte
}

// fileReader reads a playbook's top-level items into f, a piece of the
// file at a time, in file order.
type fileReader struct {
	f      *File
	vars   map[string]*Variable
	locals map[string]*Local
	plays  map[string]*Play
	// structure holds the unexpected items of every piece, reported
	// before anything in the blocks, as for a file read whole.
	structure, diags hcl.Diagnostics
}

// reset forgets what was read, for hclchunk.Each to read the file again.
func (r *fileReader) reset() {
	f := r.f
	f.Variables, f.Locals, f.Lock, f.Plays = nil, nil, nil, nil
	r.vars, r.locals, r.plays = map[string]*Variable{}, map[string]*Local{}, map[string]*Play{}
	r.structure, r.diags = nil, nil
}

func (r *fileReader) read(body *hclsyntax.Body) {
	f := r.f
	content, d := body.Content(fileSchema)
	r.structure = append(r.structure, d...)
	for _, b := range content.Blocks {
		if d := checkLabels(b); d != nil {
			r.diags = append(r.diags, d...)
			continue
		}
		switch b.Type {
		case "variable":
			v, d := parseVariable(b)
			r.diags = append(r.diags, d...)
			if prev, dup := r.vars[v.Name]; dup {
				r.diags = append(r.diags, duplicate("variable", v.Name, "Variable names must be unique.", v.DeclRange, prev.DeclRange))
				continue
			}
			r.vars[v.Name] = v
			f.Variables = append(f.Variables, v)
		case "locals":
			attrs, d := b.Body.JustAttributes()
			r.diags = append(r.diags, d...)
			for _, a := range sortedAttrs(attrs) {
				l := &Local{Name: a.Name, Expr: a.Expr, Range: a.Range}
				if prev, dup := r.locals[l.Name]; dup {
					r.diags = append(r.diags, duplicate("local value", l.Name, "Local value names must be unique across all locals blocks.", a.NameRange, prev.Range))
					continue
				}
				r.locals[l.Name] = l
				f.Locals = append(f.Locals, l)
			}
		case "lock":
			l, d := parseLock(b)
			r.diags = append(r.diags, d...)
			if f.Lock != nil {
				r.diags = append(r.diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Duplicate lock block",
					Detail:   fmt.Sprintf("A playbook holds at most one lock; previous definition was at %s.", rangeLine(f.Lock.DeclRange)),
					Subject:  b.DefRange.Ptr(),
				})
				continue
			}
			f.Lock = l
		case "play":
			p, d := parsePlay(b)
			r.diags = append(r.diags, d...)
			if prev, dup := r.plays[p.Name]; dup {
				r.diags = append(r.diags, duplicate("play", p.Name, "Play names must be unique.", p.DeclRange, prev.DeclRange))
				continue
			}
			r.plays[p.Name] = p
			f.Plays = append(f.Plays, p)
		}
	}
}

func parseVariable(b *hcl.Block) (*Variable, hcl.Diagnostics) {
	v := &Variable{Name: b.Labels[0], Type: cty.DynamicPseudoType, DeclRange: b.DefRange}
	content, diags := b.Body.Content(variableSchema)
	if !hclsyntax.ValidIdentifier(v.Name) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid variable name",
			Detail:   "A variable name must start with a letter or underscore and may contain only letters, digits, underscores and dashes.",
			Subject:  b.LabelRanges[0].Ptr(),
		})
	}
	if a, ok := content.Attributes["type"]; ok {
		ty, d := typeexpr.TypeConstraint(a.Expr)
		diags = append(diags, d...)
		if !d.HasErrors() {
			v.Type, v.TypeSet = ty, true
		}
	}
	if a, ok := content.Attributes["default"]; ok {
		v.Default = a.Expr
	}
	if a, ok := content.Attributes["sensitive"]; ok {
		var d hcl.Diagnostics
		v.Sensitive, d = literalBool(a.Expr)
		diags = append(diags, d...)
	}
	if a, ok := content.Attributes["description"]; ok {
		val, d := a.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() {
			if val.Type() != cty.String || val.IsNull() {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid description",
					Detail:   "A variable's description must be a literal string.",
					Subject:  a.Expr.Range().Ptr(),
				})
			} else {
				v.Description = val.AsString()
			}
		}
	}
	return v, diags
}

func parseLock(b *hcl.Block) (*Lock, hcl.Diagnostics) {
	l := &Lock{Name: b.Labels[0], NameRange: b.LabelRanges[0], DeclRange: b.DefRange}
	content, diags := b.Body.Content(lockSchema)
	if a, ok := content.Attributes["host"]; ok {
		l.Host = a.Expr
	}
	if a, ok := content.Attributes["wait"]; ok {
		l.Wait = a.Expr
	}
	if a, ok := content.Attributes["ttl"]; ok {
		l.TTL = a.Expr
	}
	if a, ok := content.Attributes["take_over_stale"]; ok {
		l.TakeOverStale = a.Expr
	}
	return l, diags
}

func parsePlay(b *hcl.Block) (*Play, hcl.Diagnostics) {
	p := &Play{Name: b.Labels[0], DeclRange: b.DefRange}
	content, diags := b.Body.Content(playSchema)
	if a, ok := content.Attributes["hosts"]; ok {
		p.Hosts = a.Expr
	}
	if a, ok := content.Attributes["serial"]; ok {
		p.Serial = a.Expr
	}
	steps := map[string]*Step{}
	for _, sb := range content.Blocks {
		if d := checkLabels(sb); d != nil {
			diags = append(diags, d...)
			continue
		}
		s := &Step{Name: sb.Labels[0], DeclRange: sb.DefRange}
		sc, _, d := sb.Body.PartialContent(stepModuleSchema)
		diags = append(diags, d...)
		s.Body = withoutModule(sb.Body)
		if a, ok := sc.Attributes["module"]; ok {
			s.ModuleRange = a.Expr.Range()
			val, d := a.Expr.Value(nil)
			switch {
			case d.HasErrors() || val.Type() != cty.String || val.IsNull() || !val.IsKnown() || val.AsString() == "":
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid module name",
					Detail:   `A step's module must be a literal string naming a registered module, such as module = "file".`,
					Subject:  s.ModuleRange.Ptr(),
				})
			default:
				s.Module = val.AsString()
			}
		}
		if prev, dup := steps[s.Name]; dup {
			diags = append(diags, duplicate("step", s.Name, "Step names must be unique within a play.", s.DeclRange, prev.DeclRange))
			continue
		}
		steps[s.Name] = s
		p.Steps = append(p.Steps, s)
	}
	return p, diags
}

// checkLabels refuses a block label (a name) with control characters, NUL
// included: names reach terminals, events and remote paths.
func checkLabels(b *hcl.Block) hcl.Diagnostics {
	for i, l := range b.Labels {
		if strings.ContainsFunc(l, unicode.IsControl) {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "Invalid name",
				Detail:   fmt.Sprintf("A %s name may not contain control characters; %q does.", b.Type, l),
				Subject:  b.LabelRanges[i].Ptr(),
			}}
		}
	}
	return nil
}

func literalBool(expr hcl.Expression) (bool, hcl.Diagnostics) {
	val, diags := expr.Value(nil)
	if diags.HasErrors() || val.Type() != cty.Bool || val.IsNull() {
		return false, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid value",
			Detail:   "A literal true or false is required here.",
			Subject:  expr.Range().Ptr(),
		}}
	}
	return val.True(), nil
}

func duplicate(kind, name, why string, rng, prev hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Duplicate %s %q", kind, name),
		Detail:   fmt.Sprintf("previous definition was at %s. %s", rangeLine(prev), why),
		Subject:  rng.Ptr(),
	}
}

// rangeLine is "file:line" of the start of rng.
func rangeLine(rng hcl.Range) string {
	return fmt.Sprintf("%s:%d", rng.Filename, rng.Start.Line)
}

// sortedAttrs orders attributes as they appear in the source.
func sortedAttrs(attrs hcl.Attributes) []*hcl.Attribute {
	out := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Range.Start.Byte < out[j].Range.Start.Byte })
	return out
}
