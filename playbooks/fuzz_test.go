package playbooks_test

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
)

// FuzzCompile parses and compiles arbitrary bytes as a playbook against the
// test inventory: it must neither panic, hang nor overflow its stack, every
// error must have a position, and a compiled playbook must be runnable:
// every step has a registered module and a Build, which (like When) must
// not panic on any host. Seeds are in testdata/fuzz/FuzzCompile; run it
// with go test -run ^$ -fuzz FuzzCompile -fuzztime 3m -fuzzminimizetime 3s
// ./playbooks/.
func FuzzCompile(f *testing.F) {
	for _, p := range []string{"rollback.hcl", "../examples/site.hcl", "../examples/swarm/site.hcl", "../examples/edge/site.hcl", "../examples/app/deploy.hcl"} {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	inv, diags := inventories.Parse([]byte(testInventory), "inv.hcl")
	if diags.HasErrors() {
		f.Fatal(diags)
	}
	reg := testRegistry(f)
	f.Fuzz(func(t *testing.T, src []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			compileAndBuild(t, inv, reg, src)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			buf := make([]byte, 1<<20)
			panic("compile took over 30s:\n" + string(buf[:runtime.Stack(buf, true)]))
		}
	})
}

func compileAndBuild(t *testing.T, inv *inventories.Inventory, reg *modules.Registry, src []byte) {
	file, diags := playbooks.Parse(src, "fuzz.hcl")
	if file == nil {
		t.Errorf("Parse returned no File")
		return
	}
	var pb *runner.Playbook
	if !diags.HasErrors() {
		var d hcl.Diagnostics
		pb, d = playbooks.Compile(file, playbooks.Options{Inventory: inv, Modules: reg})
		diags = append(diags, d...)
	}
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject == nil {
			t.Errorf("error without a position: %s", d.Error())
		}
	}
	if diags.HasErrors() != (pb == nil) {
		t.Errorf("playbook %v with errors %v", pb != nil, diags.HasErrors())
		return
	}
	if pb == nil {
		return
	}
	for _, p := range pb.Plays {
		hosts, err := inv.Select(p.Hosts)
		if err != nil || len(hosts) == 0 {
			t.Errorf("play %q compiled with hosts %q selecting %d: %v", p.Name, p.Hosts, len(hosts), err)
			continue
		}
		for _, s := range p.Steps {
			if _, ok := reg.Lookup(s.Module); !ok || s.Build == nil {
				t.Errorf("step %q compiled without a usable module %q", s.Name, s.Module)
				continue
			}
			for _, h := range hosts {
				sc := &runner.StepContext{Host: h}
				if s.When != nil {
					_, _ = s.When(sc)
				}
				_, _ = s.Build(sc)
			}
		}
	}
}
