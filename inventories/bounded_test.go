package inventories

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFunctionsRefuseRunawayResults(t *testing.T) {
	cases := map[string]string{
		"format width":     `format("%2000000000s", "x")`,
		"format precision": `format("%.99999999999999999999f", 1)`,
		"formatlist":       `formatlist("%1000000s", range(1000))`,
		"indent":           `indent(2e9, "a\nb")`,
		"setproduct":       `setproduct(range(1000), range(1000), range(1000))`,
		"replace":          `replace(format("%1000000s", ""), " ", format("%1000s", ""))`,
		"regex_replace":    `regex_replace(format("%1000000s", ""), " ", format("%1000s", ""))`,
		"join":             `join(format("%100000s", ""), range(1000))`,
	}
	for name, expr := range cases {
		t.Run(name, func(t *testing.T) {
			src := fmt.Sprintf("host \"h\" {\n  vars = { x = %s }\n}\n", expr)
			inv, diags := Parse([]byte(src), "inv.hcl")
			require.Nil(t, inv)
			require.Len(t, diags, 1, diags.Error())
			require.Equal(t, 2, diags[0].Subject.Start.Line)
			require.Contains(t, diags[0].Detail, "larger than 16 MiB")
		})
	}
	// Ordinary calls still work.
	inv, diags := Parse([]byte(`host "h" {
  vars = {
    f = format("%5s|%-3d|%.2f", "a", 1, 3.14159)
    i = indent(2, "a\nb")
    p = setproduct(["a", "b"], [1, 2])
    r = replace("a-b-c", "-", "+")
    j = join(",", ["a", "b"])
    l = formatlist("%s=%d", ["a", "b"], [1, 2])
    c = concat([1], [2, 3])
  }
}
`), "inv.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	v := inv.Hosts[0].Vars
	require.Equal(t, "    a|1  |3.14", v["f"].AsString())
	require.Equal(t, "a\n  b", v["i"].AsString())
	require.Equal(t, 4, v["p"].LengthInt())
	require.Equal(t, "a+b+c", v["r"].AsString())
	require.Equal(t, "a,b", v["j"].AsString())
	require.Equal(t, 2, v["l"].LengthInt())
	require.Equal(t, 3, v["c"].LengthInt())
	require.True(t, strings.HasPrefix(v["l"].AsValueSlice()[0].AsString(), "a=1"))
}

// TestSetProductIsBoundedByElements: a million tuples would take seconds
// and hundreds of MiB; refused before it is built.
func TestSetProductIsBoundedByElements(t *testing.T) {
	_, diags := Parse([]byte(`host "h" {
  vars = { x = setproduct(range(1000), range(1000)) }
}
`), "inv.hcl")
	require.Contains(t, diags.Error(), "setproduct: the result would be larger than 16 MiB")
}
