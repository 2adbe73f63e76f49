package inventories

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// parseWithin is Parse, failing the test with every goroutine's stack when
// it takes longer than d: a hang is a finding too.
func parseWithin(t *testing.T, src []byte, d time.Duration) (*Inventory, hcl.Diagnostics) {
	type result struct {
		inv   *Inventory
		diags hcl.Diagnostics
	}
	done := make(chan result, 1)
	go func() {
		inv, diags := Parse(src, "fuzz.hcl")
		done <- result{inv, diags}
	}()
	select {
	case r := <-done:
		return r.inv, r.diags
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		panic("Parse took over " + d.String() + ":\n" + string(buf[:runtime.Stack(buf, true)]))
	}
}

// FuzzParse feeds arbitrary bytes to the inventory parser: it must neither
// panic nor overflow its stack, and a parsed inventory must be usable.
// Seeds are in testdata/fuzz/FuzzParse; run it with
// go test -run ^$ -fuzz FuzzParse -fuzztime 3m -fuzzminimizetime 3s ./inventories/
// (the default minute of minimizing per new input stalls a busy machine).
func FuzzParse(f *testing.F) {
	for _, p := range []string{"lab.hcl", "prod.hcl", filepath.Join("testdata", "full.hcl")} {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		inv, diags := parseWithin(t, src, 20*time.Second)
		if (inv == nil) != diags.HasErrors() {
			t.Fatalf("inventory %v with diagnostics %v", inv != nil, diags)
		}
		for _, d := range diags {
			if d.Subject == nil {
				t.Fatalf("diagnostic without a position: %s", d.Error())
			}
		}
		if inv == nil {
			return
		}
		for _, h := range inv.Hosts {
			if msg := nameError("host", h.Name); msg != "" {
				t.Fatalf("host %q parsed: %s", h.Name, msg)
			}
			if msg := checkAddress(h.Address); msg != "" {
				t.Fatalf("host %q parsed: %s", h.Name, msg)
			}
			if got, ok := inv.Host(h.Name); !ok || got != h {
				t.Fatalf("host %q not found by name", h.Name)
			}
			if _, err := inv.Select(h.Name); err != nil {
				t.Fatalf("host %q not selectable: %v", h.Name, err)
			}
		}
	})
}
