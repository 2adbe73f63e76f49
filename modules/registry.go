package modules

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// Info describes a module of a Registry.
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

// Registry is a set of modules by name: what a playbook's steps may use,
// what a rollback may call to undo a change, and what iklim modules lists.
// A program builds its own, explicitly: stock.Registry() holds every module
// iklim ships, and an embedding program may add its own modules to it. The
// zero value and nil are empty registries. A Registry is safe for
// concurrent use.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]Info
}

// NewRegistry returns a registry of infos; a duplicate or unusable entry
// is an error.
func NewRegistry(infos ...Info) (*Registry, error) {
	r := &Registry{}
	if err := r.Add(infos...); err != nil {
		return nil, err
	}
	return r, nil
}

// Add adds infos to r, all or none: a name that is empty or already in r
// (or twice in infos), or an entry without New, is an error.
func (r *Registry) Add(infos ...Info) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, i := range infos {
		switch {
		case i.Name == "":
			return errors.New("modules: a module without a name")
		case i.New == nil:
			return fmt.Errorf("modules: module %q has no New", i.Name)
		case seen[i.Name]:
			return fmt.Errorf("modules: module %q added twice", i.Name)
		}
		if _, dup := r.byName[i.Name]; dup {
			return fmt.Errorf("modules: module %q is already in the registry", i.Name)
		}
		seen[i.Name] = true
	}
	if r.byName == nil {
		r.byName = make(map[string]Info, len(infos))
	}
	for _, i := range infos {
		r.byName[i.Name] = i
	}
	return nil
}

// Lookup finds a module by name; a nil registry has none.
func (r *Registry) Lookup(name string) (Info, bool) {
	if r == nil {
		return Info{}, false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	i, ok := r.byName[name]
	return i, ok
}

// All lists the registry's modules by name.
func (r *Registry) All() []Info {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Info, 0, len(r.byName))
	for _, i := range r.byName {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Names lists the registry's module names, sorted; for "did you mean" hints.
func (r *Registry) Names() []string {
	var names []string
	for _, i := range r.All() {
		names = append(names, i.Name)
	}
	return names
}

// RegistryUser is a module that calls other modules by name (the rollback
// module undoes each change with the module that made it). The runner
// calls UseRegistry with its run's registry (runner.Options.Modules) once
// the module is built, before Check; the backup recorder gets it the same
// way.
type RegistryUser interface {
	UseRegistry(*Registry)
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

// TakesSensitive reports whether m's module declares a `sensitive`
// argument. Every change of such a module is treated as sensitive, set or
// not in this step: a module that handles secrets (a vault's tree, a
// login) may snapshot them whatever its arguments.
func TakesSensitive(m Module) bool {
	t := reflect.TypeOf(m)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return false
	}
	for f := range t.Fields() {
		if f.Tag.Get("sensitive") == "true" {
			return true
		}
	}
	return false
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
