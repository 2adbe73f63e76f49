package inventories

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// stock holds the inventories shipped with iklim (prod.hcl, lab.hcl).
//
//go:embed *.hcl
var stock embed.FS

// StockFS returns the stock inventory files, so that a caller can print or
// copy them.
func StockFS() fs.FS { return stock }

// StockNames returns the names of the stock inventories, without ".hcl",
// sorted.
func StockNames() []string {
	entries, _ := stock.ReadDir(".")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".hcl"))
	}
	sort.Strings(names)
	return names
}

// LoadStock parses a stock inventory by name: "prod" or "lab", with or
// without ".hcl". Diagnostics name the file inventories/NAME.hcl.
func LoadStock(name string) (*Inventory, hcl.Diagnostics) {
	return LoadStockWith(hclparse.NewParser(), name)
}

// LoadStockWith is LoadStock with a caller-supplied parser, so that the
// caller can render diagnostics with source snippets from p.Files().
func LoadStockWith(p *hclparse.Parser, name string) (*Inventory, hcl.Diagnostics) {
	file := strings.TrimSuffix(name, ".hcl") + ".hcl"
	src, err := stock.ReadFile(file)
	if err != nil || path.Base(file) != file {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Unknown stock inventory",
			Detail: fmt.Sprintf("There is no stock inventory %q; the stock inventories are %s.",
				name, strings.Join(StockNames(), ", ")),
		}}
	}
	return ParseWith(p, src, "inventories/"+file)
}
