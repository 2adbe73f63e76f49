package modules

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// Info describes a registered module.
type Info struct {
	Name    string
	Doc     string // one line
	Example string // an HCL step using the module, shown by `iklim modules NAME`
	New     func() Module
	// Outputs are the values a step's register gets from the module's
	// Output, besides "changed", which every registered step has.
	Outputs []Output
	// Diff says what diff mode shows of a change; empty when it shows none.
	Diff string
	// ReadOnly marks a module that never changes the host: check mode runs
	// it as a run would and there is nothing to roll back.
	ReadOnly bool
	// Files marks a module whose changes list the files they replace
	// (Change.Files): the runner snapshots them and rollback restores them
	// byte-exact.
	Files bool
}

// Output is one value a module's Output gives a registered step.
type Output struct {
	Name string
	Type string // as Arg.Type: string, number, bool, list(…), map(…)
	Doc  string
}

// Changed is the output every registered step has, set by the runner.
var Changed = Output{Name: "changed", Type: "bool", Doc: "whether the step changed the host (in check mode: would change it)"}

// Support says what a module supports, in words for its documentation.
type Support struct {
	Check    string
	Diff     string
	Rollback string
}

// Supports describes check, diff and rollback support, from the module's
// interfaces (Rollbacker) where they tell and from Info's flags otherwise.
func (i Info) Supports() Support {
	var s Support
	if i.ReadOnly {
		s.Check = "yes: read-only, a check runs as a run would"
	} else {
		s.Check = "yes: only Check runs; the host is not changed"
	}
	s.Diff = "no"
	if i.Diff != "" {
		s.Diff = "yes: " + i.Diff
	}
	_, undoes := i.New().(Rollbacker)
	switch {
	case i.ReadOnly:
		s.Rollback = "nothing to undo: it never changes the host"
	case undoes && i.Files:
		s.Rollback = "yes: the runner restores the files and the module undoes the rest"
	case undoes:
		s.Rollback = "yes: the module undoes its change from the record"
	case i.Files:
		s.Rollback = "yes: the runner restores the files byte-exact"
	default:
		s.Rollback = "no: a rollback reports its changes as not undone"
	}
	return s
}

// Arg is one argument of a module, read from its struct tags.
type Arg struct {
	Name      string
	Type      string
	Required  bool
	Sensitive bool
	Doc       string
}

var (
	regMu    sync.RWMutex
	registry = map[string]Info{}
)

// Register adds a module under name; embedding programs may register their
// own. The stock families are registered by modules/stock. It panics on a duplicate name, since that
// is a programming error.
func Register(name, doc string, newFn func() Module) {
	RegisterInfo(Info{Name: name, Doc: doc, New: newFn})
}

// RegisterInfo adds a module described by i; module families list theirs
// in a Modules() function and modules/stock registers them.
func RegisterInfo(i Info) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[i.Name]; dup {
		panic(fmt.Sprintf("modules: %q registered twice", i.Name))
	}
	registry[i.Name] = i
}

// Lookup finds a registered module.
func Lookup(name string) (Info, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	i, ok := registry[name]
	return i, ok
}

// All lists registered modules by name.
func All() []Info {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]Info, 0, len(registry))
	for _, i := range registry {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Names lists registered module names, sorted; for "did you mean" hints.
func Names() []string {
	var names []string
	for _, i := range All() {
		names = append(names, i.Name)
	}
	return names
}

// Args lists a module's arguments from its `hcl`, `doc` and `sensitive` tags.
func (i Info) Args() []Arg {
	t := reflect.TypeOf(i.New())
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var args []Arg
	for f := range t.Fields() {
		tag := f.Tag.Get("hcl")
		if tag == "" || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if opts == "remain" || opts == "block" || opts == "label" {
			continue
		}
		args = append(args, Arg{
			Name:      name,
			Type:      typeName(f.Type),
			Required:  opts == "",
			Sensitive: f.Tag.Get("sensitive") == "true",
			Doc:       f.Tag.Get("doc"),
		})
	}
	return args
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list(" + typeName(t.Elem()) + ")"
	case reflect.Map:
		return "map(" + typeName(t.Elem()) + ")"
	default:
		return t.String()
	}
}
