package inventories

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the inventory parser: it must neither
// panic nor overflow its stack, and a parsed inventory must be usable.
// Seeds are in testdata/fuzz/FuzzParse; run it with
// go test -fuzz FuzzParse -fuzztime 3m ./inventories/
func FuzzParse(f *testing.F) {
	for _, p := range []string{"lab.hcl", "prod.hcl", filepath.Join("testdata", "full.hcl")} {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		inv, diags := Parse(src, "fuzz.hcl")
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
