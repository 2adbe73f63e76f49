package inventories

import (
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/iklimco/iklim/internal/hclchunk"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// AllGroup is the implicit group every host belongs to. It cannot be
// declared in a file.
const AllGroup = "all"

// Load reads and parses the inventory file at path. See Parse.
func Load(path string) (*Inventory, hcl.Diagnostics) {
	return LoadWith(hclparse.NewParser(), path)
}

// LoadWith is Load with a caller-supplied parser, so that the caller can
// render diagnostics with source snippets from p.Files().
func LoadWith(p *hclparse.Parser, path string) (*Inventory, hcl.Diagnostics) {
	src, err := ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read inventory",
			Detail:   fmt.Sprintf("Cannot read inventory file %s: %s.", path, err),
		}}
	}
	return ParseWith(p, src, path)
}

// Parse parses an HCL inventory. filename is used in diagnostics and stored
// in Inventory.File. Every problem in the file is reported, each with its
// file:line, in file order. The inventory is nil exactly when the
// diagnostics have errors; warnings may come with a usable inventory.
//
// The file holds at most one defaults block and any number of host "NAME"
// and group "NAME" blocks:
//
//	defaults {                      # connection attributes, vars, labels
//	  user = "iklim"  port = 22  key = "~/.ssh/id_ed25519"  known_hosts = "..."
//	  trust_on_first_use = false  proxy_jump = "bastion"  become = true
//	  become_user = "root"  backup_root = "/var/backups/iklim"
//	  connect_timeout = "15s"  vars = { ... }  labels = { ... }
//	}
//	host "iklim-app-01" {           # the same, plus address and local
//	  address = "192.0.2.11"  local = false
//	}
//	group "app" {                   # the same, plus hosts and children
//	  hosts = ["iklim-app-01"]  children = ["other-group"]
//	}
//
// Expressions are literals and calls to Functions; references to variables
// are errors. A null attribute counts as unset. labels is a map of strings,
// vars an object of any values.
//
// Each host is resolved at parse time: defaults, then every group it is in
// (ancestors before descendants, groups of equal depth by name), then the
// host itself; a later setting wins, and vars and labels merge by top-level
// key. Then the address defaults to the name, the port to 22, become_user to
// root and backup_root to DefaultBackupRoot, and a leading ~ in key and
// known_hosts becomes the home directory. Host.Groups is "all" followed by
// the host's groups in that precedence order.
func Parse(src []byte, filename string) (*Inventory, hcl.Diagnostics) {
	return ParseWith(hclparse.NewParser(), src, filename)
}

// ParseWith is Parse with a caller-supplied parser, so that the caller can
// render diagnostics with source snippets from p.Files(). The parser caches
// files by name: parsing the same filename twice returns the first result.
func ParseWith(p *hclparse.Parser, src []byte, filename string) (*Inventory, hcl.Diagnostics) {
	if diags := CheckSource(src, filename); diags.HasErrors() {
		return nil, diags
	}
	ps := &parser{src: hclchunk.Source(p, src, filename), ctx: &hcl.EvalContext{Functions: Functions()}}
	ps.reset()
	// Read a piece at a time: a large file's syntax tree is never all in
	// memory, and the parser p keeps none of it.
	_, diags := hclchunk.Each(p, src, filename, ps.read, ps.reset)
	if diags.HasErrors() {
		return nil, diags
	}
	inv := ps.finish(filename)
	diags = append(diags, sortDiags(ps.diags)...)
	if diags.HasErrors() {
		return nil, diags
	}
	return inv, diags
}

// sortDiags orders diagnostics by position in the file, those without a
// subject first, so that they read top to bottom.
func sortDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
	return diags
}

// Functions returns the functions an inventory expression may call: the
// go-cty standard library under the names Terraform and Nomad use, plus
// env("NAME"), which is the empty string when NAME is unset. No call
// returns more than MaxResultSize.
func Functions() map[string]function.Function {
	return boundedFunctions(map[string]function.Function{
		"abs":             stdlib.AbsoluteFunc,
		"ceil":            stdlib.CeilFunc,
		"chomp":           stdlib.ChompFunc,
		"chunklist":       stdlib.ChunklistFunc,
		"coalesce":        stdlib.CoalesceFunc,
		"coalescelist":    stdlib.CoalesceListFunc,
		"compact":         stdlib.CompactFunc,
		"concat":          stdlib.ConcatFunc,
		"contains":        stdlib.ContainsFunc,
		"csvdecode":       stdlib.CSVDecodeFunc,
		"distinct":        stdlib.DistinctFunc,
		"element":         stdlib.ElementFunc,
		"env":             envFunc,
		"flatten":         stdlib.FlattenFunc,
		"floor":           stdlib.FloorFunc,
		"format":          stdlib.FormatFunc,
		"formatdate":      stdlib.FormatDateFunc,
		"formatlist":      stdlib.FormatListFunc,
		"indent":          stdlib.IndentFunc,
		"index":           stdlib.IndexFunc,
		"join":            stdlib.JoinFunc,
		"jsondecode":      stdlib.JSONDecodeFunc,
		"jsonencode":      stdlib.JSONEncodeFunc,
		"keys":            stdlib.KeysFunc,
		"length":          stdlib.LengthFunc,
		"log":             stdlib.LogFunc,
		"lookup":          stdlib.LookupFunc,
		"lower":           stdlib.LowerFunc,
		"max":             stdlib.MaxFunc,
		"merge":           stdlib.MergeFunc,
		"min":             stdlib.MinFunc,
		"parseint":        stdlib.ParseIntFunc,
		"pow":             stdlib.PowFunc,
		"range":           stdlib.RangeFunc,
		"regex":           stdlib.RegexFunc,
		"regexall":        stdlib.RegexAllFunc,
		"regex_replace":   stdlib.RegexReplaceFunc,
		"replace":         stdlib.ReplaceFunc,
		"reverse":         stdlib.ReverseListFunc,
		"setintersection": stdlib.SetIntersectionFunc,
		"setproduct":      stdlib.SetProductFunc,
		"setsubtract":     stdlib.SetSubtractFunc,
		"setunion":        stdlib.SetUnionFunc,
		"signum":          stdlib.SignumFunc,
		"slice":           stdlib.SliceFunc,
		"sort":            stdlib.SortFunc,
		"split":           stdlib.SplitFunc,
		"strlen":          stdlib.StrlenFunc,
		"strrev":          stdlib.ReverseFunc,
		"substr":          stdlib.SubstrFunc,
		"timeadd":         stdlib.TimeAddFunc,
		"title":           stdlib.TitleFunc,
		"trim":            stdlib.TrimFunc,
		"trimprefix":      stdlib.TrimPrefixFunc,
		"trimspace":       stdlib.TrimSpaceFunc,
		"trimsuffix":      stdlib.TrimSuffixFunc,
		"upper":           stdlib.UpperFunc,
		"values":          stdlib.ValuesFunc,
		"zipmap":          stdlib.ZipmapFunc,
	})
}

var envFunc = function.New(&function.Spec{
	Description: "Returns the value of an environment variable of the control machine, or the empty string.",
	Params:      []function.Parameter{{Name: "name", Type: cty.String}},
	Type:        function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(os.Getenv(args[0].AsString())), nil
	},
})

// Attribute names shared by defaults, group and host blocks.
var connAttrs = []hcl.AttributeSchema{
	{Name: "user"},
	{Name: "port"},
	{Name: "key"},
	{Name: "known_hosts"},
	{Name: "trust_on_first_use"},
	{Name: "proxy_jump"},
	{Name: "become"},
	{Name: "become_user"},
	{Name: "backup_root"},
	{Name: "connect_timeout"},
	{Name: "vars"},
	{Name: "labels"},
}

func withAttrs(extra ...string) *hcl.BodySchema {
	s := &hcl.BodySchema{Attributes: append([]hcl.AttributeSchema(nil), connAttrs...)}
	for _, n := range extra {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: n})
	}
	return s
}

var (
	topSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
		{Type: "defaults"},
		{Type: "host", LabelNames: []string{"name"}},
		{Type: "group", LabelNames: []string{"name"}},
	}}
	defaultsSchema = withAttrs()
	hostSchema     = withAttrs("address", "local")
	groupSchema    = withAttrs("hosts", "children")
)

// settings are the attributes one block sets; nil means not set.
type settings struct {
	user, key, knownHosts, proxyJump, becomeUser, backupRoot, address *string
	port                                                              *int
	tofu, become, local                                               *bool
	timeout                                                           *time.Duration
	labels                                                            map[string]string
	vars                                                              map[string]cty.Value
	src                                                               *source
}

// source is what a block set and where, for Inventory.Origins, which
// formats it only when asked: a host's own strings would be most of a
// large inventory's memory.
type source struct {
	kind, name, file string // name is empty for defaults
	set              []origin
}

// origin is a setting a block made: key+sub ("user", or "vars." and the
// var's name) at a line.
type origin struct {
	key, sub string
	line     int
}

// from names the block: "defaults", `group "app"`.
func (s *source) from() string {
	if s.kind == "defaults" {
		return s.kind
	}
	return fmt.Sprintf("%s %q", s.kind, s.name)
}

// apply folds s over h: attributes s sets replace h's; labels and vars are
// merged key by key.
func (s *settings) apply(h *Host) {
	setStr := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	setBool := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	setStr(&h.User, s.user)
	setStr(&h.Key, s.key)
	setStr(&h.KnownHosts, s.knownHosts)
	setStr(&h.ProxyJump, s.proxyJump)
	setStr(&h.BecomeUser, s.becomeUser)
	setStr(&h.BackupRoot, s.backupRoot)
	setStr(&h.Address, s.address)
	if s.port != nil {
		h.Port = *s.port
	}
	setBool(&h.TrustOnFirstUse, s.tofu)
	setBool(&h.Become, s.become)
	setBool(&h.Local, s.local)
	if s.timeout != nil {
		h.ConnectTimeout = *s.timeout
	}
	for k, v := range s.labels {
		h.Labels[k] = v
	}
	for k, v := range s.vars {
		h.Vars[k] = v
	}
}

// isSet says whether s sets the attribute name (not labels or vars).
func (s *settings) isSet(name string) bool {
	switch name {
	case "user":
		return s.user != nil
	case "key":
		return s.key != nil
	case "known_hosts":
		return s.knownHosts != nil
	case "proxy_jump":
		return s.proxyJump != nil
	case "become_user":
		return s.becomeUser != nil
	case "backup_root":
		return s.backupRoot != nil
	case "address":
		return s.address != nil
	case "port":
		return s.port != nil
	case "trust_on_first_use":
		return s.tofu != nil
	case "become":
		return s.become != nil
	case "local":
		return s.local != nil
	case "connect_timeout":
		return s.timeout != nil
	}
	return false
}

type ref struct {
	name string
	rng  hcl.Range
}

type hostDecl struct {
	name string
	def  hcl.Range
	s    settings
}

type groupDecl struct {
	name     string
	def      hcl.Range
	s        settings
	hosts    []ref
	children []ref
}

type parser struct {
	src   []byte
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics

	// what read has read so far
	defaults          *hclDefaults
	hosts             []*hostDecl
	hostByName        map[string]*hostDecl
	groups, dupGroups []*groupDecl
	groupByName       map[string]*groupDecl
}

func (p *parser) errorf(subject hcl.Range, summary, format string, args ...any) {
	p.diags = append(p.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

func at(r hcl.Range) string { return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line) }

// reset forgets what read has read.
func (p *parser) reset() {
	p.diags = nil
	p.defaults = nil
	p.hosts, p.groups, p.dupGroups = nil, nil, nil
	p.hostByName = map[string]*hostDecl{}
	p.groupByName = map[string]*groupDecl{}
}

// read takes the top-level blocks of one piece of the file.
func (p *parser) read(body *hclsyntax.Body) {
	content, d := body.Content(topSchema)
	p.diags = append(p.diags, d...)
	for _, b := range content.Blocks {
		switch b.Type {
		case "defaults":
			if p.defaults != nil {
				p.errorf(b.DefRange, "Duplicate defaults block",
					"Only one defaults block is allowed; previous definition was at %s.", at(p.defaults.def))
				continue
			}
			c, d := b.Body.Content(defaultsSchema)
			p.diags = append(p.diags, d...)
			p.defaults = &hclDefaults{def: b.DefRange, s: p.settings(c, b)}
		case "host":
			name := b.Labels[0]
			p.checkName("host", name, b.LabelRanges[0])
			c, d := b.Body.Content(hostSchema)
			p.diags = append(p.diags, d...)
			h := &hostDecl{name: name, def: b.DefRange, s: p.settings(c, b)}
			if prev, dup := p.hostByName[name]; dup {
				p.errorf(b.LabelRanges[0], fmt.Sprintf("Duplicate host %q", name),
					"previous definition was at %s", at(prev.def))
				continue
			}
			p.hostByName[name] = h
			p.hosts = append(p.hosts, h)
		case "group":
			name := b.Labels[0]
			p.checkName("group", name, b.LabelRanges[0])
			c, d := b.Body.Content(groupSchema)
			p.diags = append(p.diags, d...)
			g := &groupDecl{name: name, def: b.DefRange, s: p.settings(c, b)}
			if a, ok := c.Attributes["hosts"]; ok {
				g.hosts = p.names(a)
			}
			if a, ok := c.Attributes["children"]; ok {
				g.children = p.names(a)
			}
			if prev, dup := p.groupByName[name]; dup {
				p.errorf(b.LabelRanges[0], fmt.Sprintf("Duplicate group %q", name),
					"previous definition was at %s", at(prev.def))
				p.dupGroups = append(p.dupGroups, g) // still checked in finish
				continue
			}
			p.groupByName[name] = g
			p.groups = append(p.groups, g)
		}
	}
}

// finish resolves what read has read into the inventory.
func (p *parser) finish(filename string) *Inventory {
	defaults, hosts, groups, dupGroups := p.defaults, p.hosts, p.groups, p.dupGroups
	hostByName, groupByName := p.hostByName, p.groupByName

	// A name that is both a host and a group selects both in a pattern.
	for _, g := range groups {
		if h, ok := hostByName[g.name]; ok && nameError("group", g.name) == "" {
			p.diags = append(p.diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Group and host share a name",
				Detail: fmt.Sprintf("Group %q has the name of the host defined at %s; the pattern %q selects both.",
					g.name, at(h.def), g.name),
				Subject: g.def.Ptr(),
			})
		}
	}

	// References: drop unknown names (reported) and duplicates.
	hostNames := make([]string, 0, len(hosts))
	for _, h := range hosts {
		hostNames = append(hostNames, h.name)
	}
	groupNames := make([]string, 0, len(groups))
	for _, g := range groups {
		groupNames = append(groupNames, g.name)
	}
	for _, g := range append(groups, dupGroups...) {
		g.hosts = p.resolveRefs(g, g.hosts, "host", hostNames, func(n string) bool { _, ok := hostByName[n]; return ok })
		g.children = p.resolveRefs(g, g.children, "group", groupNames, func(n string) bool { _, ok := groupByName[n]; return ok })
	}
	p.checkCycles(groups, groupByName)

	inv := &Inventory{Groups: map[string]*Group{}, File: filename, byName: make(map[string]*Host, len(hosts)),
		origins: make(map[string][]*source, len(hosts))}
	for _, g := range groups {
		grp := &Group{Name: g.name, Vars: map[string]cty.Value{}}
		for _, h := range g.hosts {
			grp.Hosts = append(grp.Hosts, h.name)
		}
		for _, c := range g.children {
			grp.Children = append(grp.Children, c.name)
		}
		for k, v := range g.s.vars {
			grp.Vars[k] = v
		}
		inv.Groups[g.name] = grp
	}
	gr := newGraph(inv.Groups)
	direct := map[string][]string{} // host -> groups listing it
	for _, g := range groups {
		for _, h := range g.hosts {
			direct[h.name] = append(direct[h.name], g.name)
		}
	}
	for _, hd := range hosts {
		order := gr.groupsOf(direct[hd.name])
		h := &Host{Name: hd.name, Labels: map[string]string{}, Vars: map[string]cty.Value{}}
		srcs := make([]*source, 0, len(order)+2)
		if defaults != nil {
			defaults.s.apply(h)
			srcs = append(srcs, defaults.s.src)
		}
		for _, n := range order {
			groupByName[n].s.apply(h)
			srcs = append(srcs, groupByName[n].s.src)
		}
		hd.s.apply(h)
		inv.origins[h.Name] = append(srcs, hd.s.src)
		h.Groups = append([]string{AllGroup}, order...)
		fillDefaults(h)
		inv.Hosts = append(inv.Hosts, h)
		inv.byName[h.Name] = h
	}
	return inv
}

// graph is the children relation of an inventory's groups, upside down.
type graph struct {
	parents map[string][]string
	depth   map[string]int
}

func newGraph(groups map[string]*Group) *graph {
	g := &graph{parents: map[string][]string{}, depth: map[string]int{}}
	for _, grp := range groups {
		for _, c := range grp.Children {
			g.parents[c] = append(g.parents[c], grp.Name)
		}
	}
	return g
}

// depthOf is one more than the depth of the deepest parent, so ancestors
// always sort before descendants. A cycle (reported elsewhere) is cut.
func (g *graph) depthOf(n string, seen map[string]bool) int {
	if d, ok := g.depth[n]; ok {
		return d
	}
	if seen[n] {
		return 0
	}
	seen[n] = true
	d := 0
	for _, par := range g.parents[n] {
		d = max(d, g.depthOf(par, seen)+1)
	}
	delete(seen, n)
	g.depth[n] = d
	return d
}

// groupsOf returns the groups in direct and all their ancestors, in
// precedence order: ancestors before descendants, then by name.
func (g *graph) groupsOf(direct []string) []string {
	member := map[string]bool{}
	queue := append([]string(nil), direct...)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if member[n] || n == AllGroup {
			continue
		}
		member[n] = true
		queue = append(queue, g.parents[n]...)
	}
	order := make([]string, 0, len(member))
	for n := range member {
		order = append(order, n)
		g.depthOf(n, map[string]bool{})
	}
	sort.Slice(order, func(i, j int) bool {
		if di, dj := g.depth[order[i]], g.depth[order[j]]; di != dj {
			return di < dj
		}
		return order[i] < order[j]
	})
	return order
}

// New returns an empty inventory for building in code with Add.
func New() *Inventory {
	return &Inventory{Groups: map[string]*Group{}}
}

// Add appends h to the inventory, for Go callers that build inventories in
// code. It fills h the way a file would (address, port 22, become user root,
// DefaultBackupRoot, ~ in key paths), creates the groups named in h.Groups
// that do not exist yet and makes h a direct member of them, then sets
// h.Groups to "all" plus every group h is in, directly or through children,
// in precedence order. Group vars and labels are not folded into h: set
// h's own fields. It refuses a nil host, an invalid name and a duplicate.
func (inv *Inventory) Add(h *Host) error {
	if h == nil {
		return fmt.Errorf("add host: nil host")
	}
	if msg := nameError("host", h.Name); msg != "" {
		return fmt.Errorf("add host %q: %s", h.Name, strings.TrimSuffix(lowerFirst(msg), "."))
	}
	if _, dup := inv.Host(h.Name); dup {
		return fmt.Errorf("add host %q: duplicate host", h.Name)
	}
	for _, g := range h.Groups {
		if g == AllGroup {
			continue
		}
		if msg := nameError("group", g); msg != "" {
			return fmt.Errorf("add host %q: %s", h.Name, strings.TrimSuffix(lowerFirst(msg), "."))
		}
	}
	if inv.Groups == nil {
		inv.Groups = map[string]*Group{}
	}
	for _, g := range h.Groups {
		if g == AllGroup {
			continue
		}
		grp, ok := inv.Groups[g]
		if !ok {
			grp = &Group{Name: g, Vars: map[string]cty.Value{}}
			inv.Groups[g] = grp
			if inv.addGroups == nil {
				inv.addGroups = map[string]bool{}
			}
			inv.addGroups[g] = true
		}
		if inv.addGroups[g] || !slices.Contains(grp.Hosts, h.Name) { // the host is new to the groups Add made
			grp.Hosts = append(grp.Hosts, h.Name)
		}
	}
	// The host is new, so besides h.Groups only groups made by hand can
	// list it already: scan those, not the ones Add made, so that adding n
	// hosts stays linear in n.
	var direct []string
	for _, grp := range inv.Groups {
		if slices.Contains(h.Groups, grp.Name) || !inv.addGroups[grp.Name] && slices.Contains(grp.Hosts, h.Name) {
			direct = append(direct, grp.Name)
		}
	}
	h.Groups = append([]string{AllGroup}, newGraph(inv.Groups).groupsOf(direct)...)
	fillDefaults(h)
	inv.Hosts = append(inv.Hosts, h)
	if inv.byName == nil {
		inv.byName = map[string]*Host{}
	}
	inv.byName[h.Name] = h
	return nil
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

type hclDefaults struct {
	def hcl.Range
	s   settings
}

// fillDefaults sets what neither the file nor the caller did: the address,
// become user and backup root, and expands ~ in local paths. Port stays 0
// when unset, so that ~/.ssh/config's Port can still apply (then 22).
func fillDefaults(h *Host) {
	if h.Address == "" {
		h.Address = h.Name
	}
	if h.BecomeUser == "" {
		h.BecomeUser = "root"
	}
	if h.BackupRoot == "" {
		h.BackupRoot = DefaultBackupRoot
	}
	if h.Labels == nil {
		h.Labels = map[string]string{}
	}
	if h.Vars == nil {
		h.Vars = map[string]cty.Value{}
	}
	h.Key = ExpandHome(h.Key)
	h.KnownHosts = ExpandHome(h.KnownHosts)
}

// ExpandHome replaces a leading ~ in a local path with the home directory;
// for key and known_hosts paths, also when they come from ~/.ssh/config.
func ExpandHome(p string) string {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return p
	}
	return filepath.Join(home, p[1:])
}

// badNameChars have a meaning in host patterns.
const badNameChars = ":,&!*?[]"

func nameError(kind, name string) string {
	switch {
	case name == "":
		return fmt.Sprintf("A %s name may not be empty.", kind)
	case name == AllGroup:
		return fmt.Sprintf("%q is the implicit group of every host and cannot name a %s.", name, kind)
	case strings.ContainsFunc(name, unicode.IsControl) && !strings.ContainsFunc(name, isSpace):
		return fmt.Sprintf("The %s name %q may not contain control characters.", kind, name)
	case strings.ContainsAny(name, badNameChars) || strings.ContainsFunc(name, isSpace):
		return fmt.Sprintf("The %s name %q may not contain whitespace or any of %s: they have a meaning in host patterns.",
			kind, name, strings.Join(strings.Split(badNameChars, ""), " "))
	}
	return ""
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
}

func (p *parser) checkName(kind, name string, rng hcl.Range) {
	if msg := nameError(kind, name); msg != "" {
		p.errorf(rng, fmt.Sprintf("Invalid %s name", kind), "%s", msg)
	}
}

func (p *parser) resolveRefs(g *groupDecl, refs []ref, kind string, known []string, exists func(string) bool) []ref {
	var out []ref
	seen := map[string]bool{}
	for _, r := range refs {
		if !exists(r.name) {
			detail := fmt.Sprintf("Group %q lists %s %q, which is not defined in this inventory.", g.name, kind, r.name)
			if s := suggest(r.name, known); s != "" {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
			p.errorf(r.rng, fmt.Sprintf("Unknown %s", kind), "%s", detail)
			continue
		}
		if seen[r.name] {
			continue
		}
		seen[r.name] = true
		out = append(out, r)
	}
	return out
}

// suggest returns the known name closest to name, if it is close enough to
// be a likely typo.
func suggest(name string, known []string) string {
	best, bestD := "", 3
	if len(name) > 256 {
		return "" // the distance costs the product of the lengths
	}
	for _, k := range known {
		if n := len(k) - len(name); n >= bestD || -n >= bestD {
			continue
		}
		if d := levenshtein.Distance(name, k, nil); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// checkCycles reports every back edge in the children graph once, with the
// cycle spelled out and the closing child reference as the subject.
func (p *parser) checkCycles(groups []*groupDecl, byName map[string]*groupDecl) {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(g *groupDecl)
	visit = func(g *groupDecl) {
		color[g.name] = grey
		stack = append(stack, g.name)
		for _, c := range g.children {
			switch color[c.name] {
			case white:
				visit(byName[c.name])
			case grey:
				i := len(stack) - 1
				for stack[i] != c.name {
					i--
				}
				path := append(append([]string(nil), stack[i:]...), c.name)
				p.errorf(c.rng, "Group cycle", "Group %q is its own descendant: %s.", c.name, strings.Join(path, " -> "))
			}
		}
		stack = stack[:len(stack)-1]
		color[g.name] = black
	}
	for _, g := range groups {
		if color[g.name] == white {
			visit(g)
		}
	}
}

// value evaluates expr with functions but no variables; every reference is
// reported.
func (p *parser) value(expr hcl.Expression) (cty.Value, bool) {
	if vars := expr.Variables(); len(vars) > 0 {
		for _, tr := range vars {
			rng := tr.SourceRange()
			text := tr.RootName()
			if rng.End.Byte <= len(p.src) && rng.Start.Byte < rng.End.Byte {
				text = string(p.src[rng.Start.Byte:rng.End.Byte])
			}
			p.diags = append(p.diags, &hcl.Diagnostic{
				Severity:   hcl.DiagError,
				Summary:    "Variables not allowed",
				Detail:     fmt.Sprintf("An inventory may use literals and function calls only; %q is a reference to a variable.", text),
				Subject:    rng.Ptr(),
				Expression: expr,
			})
		}
		return cty.DynamicVal, false
	}
	v, d := expr.Value(p.ctx)
	p.diags = append(p.diags, d...)
	if d.HasErrors() || !v.IsWhollyKnown() {
		return cty.DynamicVal, false
	}
	return v, true
}

func (p *parser) typeError(a *hcl.Attribute, want string) {
	p.diags = append(p.diags, &hcl.Diagnostic{
		Severity:   hcl.DiagError,
		Summary:    "Incorrect attribute value type",
		Detail:     fmt.Sprintf("Inappropriate value for attribute %q: %s required.", a.Name, want),
		Subject:    a.Expr.Range().Ptr(),
		Expression: a.Expr,
	})
}

// convertAttr evaluates a and converts it to ty. Null counts as not set.
func (p *parser) convertAttr(a *hcl.Attribute, ty cty.Type, want string) (cty.Value, bool) {
	v, ok := p.value(a.Expr)
	if !ok || v.IsNull() {
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil {
		p.typeError(a, want)
		return cty.NilVal, false
	}
	return cv, true
}

func (p *parser) str(a *hcl.Attribute) *string {
	v, ok := p.convertAttr(a, cty.String, "string")
	if !ok {
		return nil
	}
	s := v.AsString()
	if strings.IndexByte(s, 0) >= 0 {
		p.errorf(a.Expr.Range(), "Invalid value", "%s may not contain a NUL byte.", a.Name)
		return nil
	}
	return &s
}

// checkAddress refuses an address ssh cannot dial as written: empty,
// whitespace or control characters, or a port (that is the port attribute).
func checkAddress(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return "address may not be empty; leave it out to use the host name."
	case strings.ContainsFunc(s, unicode.IsSpace) || strings.ContainsFunc(s, unicode.IsControl):
		return fmt.Sprintf("address %q may not contain whitespace or control characters.", s)
	case strings.ContainsAny(s, "[]/@,"):
		return fmt.Sprintf("address %q must be a host name or an IP address, without brackets, user or path.", s)
	case strings.Contains(s, ":") && net.ParseIP(s) == nil:
		return fmt.Sprintf("address %q is neither a host name nor an IP address; set the port with the port attribute.", s)
	}
	return ""
}

// checkUser refuses a login name ssh cannot use.
func checkUser(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return "user may not be empty; leave it out to use ~/.ssh/config's User or the local user."
	case strings.ContainsFunc(s, unicode.IsSpace) || strings.ContainsFunc(s, unicode.IsControl) || strings.ContainsAny(s, "@:"):
		return fmt.Sprintf("user %q may not contain whitespace, control characters, @ or :.", s)
	}
	return ""
}

// checkProxyJump parses "[user@]host[:port][,…]" as ssh -J does and says
// what is wrong with it, if anything. "" and "none" mean no jump.
func checkProxyJump(s string) string {
	if s == "" || s == "none" { // no jump: overrides a group's
		return ""
	}
	for _, hop := range strings.Split(s, ",") {
		hop = strings.TrimPrefix(strings.TrimSpace(hop), "ssh://")
		if hop == "" {
			return fmt.Sprintf("proxy_jump %q has an empty hop; write hops as [user@]host[:port], separated by commas.", s)
		}
		if i := strings.LastIndexByte(hop, '@'); i >= 0 {
			if msg := checkUser(hop[:i]); msg != "" {
				return fmt.Sprintf("proxy_jump %q: %s", s, msg)
			}
			hop = hop[i+1:]
		}
		host, port := hop, ""
		if strings.HasPrefix(hop, "[") {
			end := strings.IndexByte(hop, ']')
			if end < 0 {
				return fmt.Sprintf("proxy_jump %q has an unclosed [.", s)
			}
			host, port = hop[1:end], hop[end+1:]
			if port != "" && !strings.HasPrefix(port, ":") {
				return fmt.Sprintf("proxy_jump %q: %q after ] is not a port.", s, port)
			}
			port = strings.TrimPrefix(port, ":")
		} else if i := strings.LastIndexByte(hop, ':'); i >= 0 {
			host, port = hop[:i], hop[i+1:]
		}
		if msg := checkAddress(host); msg != "" {
			return fmt.Sprintf("proxy_jump %q: the hop %s", s, strings.TrimPrefix(msg, "address "))
		}
		if port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return fmt.Sprintf("proxy_jump %q: the port %q is not a whole number from 1 to 65535.", s, port)
			}
		}
	}
	return ""
}

func (p *parser) boolean(a *hcl.Attribute) *bool {
	v, ok := p.convertAttr(a, cty.Bool, "bool")
	if !ok {
		return nil
	}
	b := v.True()
	return &b
}

// settings reads the attributes block b sets, in c.
func (p *parser) settings(c *hcl.BodyContent, b *hcl.Block) settings {
	var s settings
	attrs := make([]*hcl.Attribute, 0, len(c.Attributes))
	for _, a := range c.Attributes {
		attrs = append(attrs, a)
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].Range.Start.Byte < attrs[j].Range.Start.Byte })
	s.src = &source{kind: b.Type, file: b.DefRange.Filename}
	if len(b.Labels) > 0 {
		s.src.name = b.Labels[0]
	}
	for _, a := range attrs {
		switch a.Name {
		case "user":
			s.user = p.str(a)
			if s.user != nil {
				if msg := checkUser(*s.user); msg != "" {
					p.errorf(a.Expr.Range(), "Invalid user", "%s", msg)
					s.user = nil
				}
			}
		case "key":
			s.key = p.str(a)
		case "known_hosts":
			s.knownHosts = p.str(a)
		case "proxy_jump":
			s.proxyJump = p.str(a)
			if s.proxyJump != nil {
				if msg := checkProxyJump(*s.proxyJump); msg != "" {
					p.errorf(a.Expr.Range(), "Invalid proxy_jump", "%s", msg)
					s.proxyJump = nil
				}
			}
		case "become_user":
			s.becomeUser = p.str(a)
		case "address":
			s.address = p.str(a)
			if s.address != nil {
				if msg := checkAddress(*s.address); msg != "" {
					p.errorf(a.Expr.Range(), "Invalid address", "%s", msg)
					s.address = nil
				}
			}
		case "backup_root":
			if v := p.str(a); v != nil {
				if !path.IsAbs(*v) {
					p.errorf(a.Expr.Range(), "Invalid backup_root",
						"backup_root must be an absolute path on the host; got %q.", *v)
				} else {
					s.backupRoot = v
				}
			}
		case "trust_on_first_use":
			s.tofu = p.boolean(a)
		case "become":
			s.become = p.boolean(a)
		case "local":
			s.local = p.boolean(a)
		case "port":
			v, ok := p.convertAttr(a, cty.Number, "number")
			if !ok {
				continue
			}
			bf := v.AsBigFloat()
			n, acc := bf.Int64()
			if !bf.IsInt() || acc != 0 || n < 1 || n > 65535 {
				p.errorf(a.Expr.Range(), "Invalid port",
					"port must be a whole number from 1 to 65535; got %s.", bf.Text('g', -1))
				continue
			}
			port := int(n)
			s.port = &port
		case "connect_timeout":
			v := p.str(a)
			if v == nil {
				continue
			}
			d, err := time.ParseDuration(*v)
			if err != nil || d <= 0 {
				p.errorf(a.Expr.Range(), "Invalid duration",
					"connect_timeout must be a positive duration such as \"15s\" or \"1m30s\"; got %q.", *v)
				continue
			}
			s.timeout = &d
		case "labels":
			v, ok := p.convertAttr(a, cty.Map(cty.String), "map of string")
			if !ok {
				continue
			}
			if HasNUL(v) {
				p.errorf(a.Expr.Range(), "Invalid value", "labels may not contain a NUL byte.")
				continue
			}
			s.labels = map[string]string{}
			for k, e := range v.AsValueMap() {
				if e.IsNull() {
					p.typeError(a, "map of string")
					s.labels = nil
					break
				}
				s.labels[k] = e.AsString()
			}
		case "vars":
			v, ok := p.value(a.Expr)
			if !ok || v.IsNull() {
				continue
			}
			if ty := v.Type(); !ty.IsObjectType() && !ty.IsMapType() {
				p.typeError(a, "object")
				continue
			}
			if HasNUL(v) {
				p.errorf(a.Expr.Range(), "Invalid value", "vars may not contain a NUL byte.")
				continue
			}
			s.vars = map[string]cty.Value{}
			for it := v.ElementIterator(); it.Next(); {
				k, e := it.Element()
				s.vars[k.AsString()] = e
			}
		}
	}
	for _, a := range attrs {
		line := a.Range.Start.Line
		switch {
		case a.Name == "labels":
			for k := range s.labels {
				s.src.set = append(s.src.set, origin{"labels.", k, line})
			}
		case a.Name == "vars":
			for k := range s.vars {
				s.src.set = append(s.src.set, origin{"vars.", k, line})
			}
		case s.isSet(a.Name):
			s.src.set = append(s.src.set, origin{a.Name, "", line})
		}
	}
	return s
}

// names reads a list of host or group names. Each element of a literal list
// keeps its own range, so that errors point at the offending name.
func (p *parser) names(a *hcl.Attribute) []ref {
	var out []ref
	if exprs, d := hcl.ExprList(a.Expr); !d.HasErrors() {
		for _, e := range exprs {
			v, ok := p.value(e)
			if !ok {
				continue
			}
			sv, err := convert.Convert(v, cty.String)
			if err != nil || sv.IsNull() {
				p.diags = append(p.diags, &hcl.Diagnostic{
					Severity:   hcl.DiagError,
					Summary:    "Incorrect attribute value type",
					Detail:     fmt.Sprintf("Inappropriate value for an element of %q: string required.", a.Name),
					Subject:    e.Range().Ptr(),
					Expression: e,
				})
				continue
			}
			out = append(out, ref{name: sv.AsString(), rng: e.Range()})
		}
		return out
	}
	v, ok := p.convertAttr(a, cty.List(cty.String), "list of string")
	if !ok {
		return nil
	}
	for _, e := range v.AsValueSlice() {
		if e.IsNull() {
			p.typeError(a, "list of string")
			return nil
		}
		out = append(out, ref{name: e.AsString(), rng: a.Expr.Range()})
	}
	return out
}
