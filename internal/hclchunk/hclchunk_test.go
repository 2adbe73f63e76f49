package hclchunk

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// parse merges src's pieces into one body, as a large block's body is
// merged, for comparison with the whole-file parse.
func parse(src []byte, filename string, min, piece int) (*hcl.File, hcl.Diagnostics) {
	c, ok := plan(src, filename, min, piece)
	if !ok {
		return hclsyntax.ParseConfig(src, filename, fileStart)
	}
	defer c.feed.stop()
	body, first, last, ok := c.body(0, len(src), true)
	if !ok {
		return hclsyntax.ParseConfig(src, filename, fileStart)
	}
	// As hclsyntax: from the file's first token to its end.
	body.SrcRange = hcl.RangeBetween(first, last.SrcRange)
	body.EndRange = last.EndRange
	return &hcl.File{Body: body, Bytes: src}, c.diags
}

// same parses src whole and in pieces of every small size, and requires
// the same body and diagnostics.
func same(t *testing.T, name string, src []byte, pieces ...int) {
	t.Helper()
	if pieces == nil {
		pieces = []int{1, 7, 64, 512}
	}
	whole, wd := hclsyntax.ParseConfig(src, name, hcl.Pos{Line: 1, Column: 1})
	for _, piece := range pieces {
		for _, min := range []int{1, 40, 300} {
			got, gd := parse(src, name, min, piece)
			require.Equal(t, wd.Error(), gd.Error(), "%s: min %d piece %d: diagnostics", name, min, piece)
			if !reflect.DeepEqual(whole.Body, got.Body) {
				t.Fatalf("%s: min %d piece %d: the body differs from the whole-file parse", name, min, piece)
			}
			require.Equal(t, src, got.Bytes)
			sameRead(t, src, name, min, piece, whole.Body.(*hclsyntax.Body), wd)
		}
	}
}

// sameRead requires each to read, across its pieces, the items and
// diagnostics of the whole-file parse; it reads nothing when that has
// errors.
func sameRead(t *testing.T, src []byte, name string, min, piece int, whole *hclsyntax.Body, wd hcl.Diagnostics) {
	t.Helper()
	merged := &hclsyntax.Body{Attributes: hclsyntax.Attributes{}, Blocks: hclsyntax.Blocks{}}
	reads := 0
	f, diags := each(src, name, min, piece, func(b *hclsyntax.Body) {
		reads++
		for n, a := range b.Attributes {
			merged.Attributes[n] = a
		}
		merged.Blocks = append(merged.Blocks, b.Blocks...)
	}, func() {
		merged = &hclsyntax.Body{Attributes: hclsyntax.Attributes{}, Blocks: hclsyntax.Blocks{}}
	})
	require.Equal(t, wd.Error(), diags.Error(), "%s: min %d piece %d: diagnostics of each", name, min, piece)
	require.Equal(t, src, f.Bytes)
	if wd.HasErrors() {
		require.Empty(t, merged.Attributes)
		require.Empty(t, merged.Blocks)
		return
	}
	require.NotZero(t, reads)
	if !reflect.DeepEqual(whole.Attributes, merged.Attributes) || !reflect.DeepEqual(whole.Blocks, merged.Blocks) {
		t.Fatalf("%s: min %d piece %d: each read other items than the whole-file parse has", name, min, piece)
	}
}

func TestRepoFiles(t *testing.T) {
	var files []string
	for _, glob := range []string{"../../inventories/*.hcl", "../../inventories/testdata/*.hcl", "../../playbooks/*.hcl",
		"../../playbooks/testdata/*.hcl", "../../playbooks/testdata/*/*.hcl", "../../examples/*/*.hcl", "../../bench/*.hcl"} {
		m, err := filepath.Glob(glob)
		require.NoError(t, err)
		files = append(files, m...)
	}
	require.NotEmpty(t, files)
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		same(t, f, src)
	}
}

func TestTricky(t *testing.T) {
	cases := map[string]string{
		"heredoc":                 "a = <<EOT\n}\n\"\n  ${x}\nEOT\nb = <<-X\n  {\n  X\nblock \"l\" {\n  c = 1\n}\n",
		"strings":                 "a = \"}{\\\"\\n$${x}%%{y}\"\nb = \"${ {a = \"}\"}.a }\"\nc = 1\n",
		"comments":                "# {\n// [\n/* (\n\n */\nblk {\n  # }\n  x = 1 # ]\n}\n",
		"nested":                  "p \"x\" {\n  s \"a\" {\n    v = [\n      1,\n      2,\n    ]\n  }\n  s \"b\" {\n    w = { k = \"v\" }\n  }\n}\n",
		"no trailing newline":     "a = 1\nb { c = 2 }",
		"crlf":                    "a = 1\r\nb {\r\n  c = 2\r\n}\r\n",
		"tabs":                    "b {\n\tc = 2\n\t}\n",
		"one-line block":          "b \"x\" { c = 2 }\nd = 3\n",
		"object attr":             "vars = {\n  a = 1\n  b = 2\n}\n",
		"utf8":                    "h \"ç\" {\n  l = \"ü—\"\n  }\n",
		"dup attr":                "a = 1\nb = 2\na = 3\n",
		"dup in block":            "x {\n  a = 1\n  a = 2\n}\n",
		"unclosed":                "x {\n  a = 1\n",
		"stray brace":             "a = 1\n}\nb = 2\n",
		"bad string":              "a = \"x\nb = 2\n",
		"block junk after brace":  "x { # c\n  a = 1\n}\n",
		"block junk before close": "x {\n  a = 1\n  b = 2 }\n",
		"empty":                   "",
		"blank":                   "\n\n# only a comment\n",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) { same(t, name, []byte(src)) })
	}
}

func TestLargeGenerated(t *testing.T) {
	var b strings.Builder
	b.WriteString("# a large file\ndefaults {\n  user = \"u\"\n}\n")
	for i := range 300 {
		fmt.Fprintf(&b, "host \"h%d\" {\n  address = \"10.0.0.%d\"\n  vars = { n = %d, s = \"${upper(\"x\")}\" }\n}\n", i, i%250, i)
	}
	b.WriteString("play \"p\" {\n  hosts = \"all\"\n")
	for i := range 300 {
		fmt.Fprintf(&b, "  step \"s%d\" {\n    module = \"copy\"\n    content = <<EOT\nline ${i}\nEOT\n  }\n", i)
	}
	b.WriteString("}\n")
	src := []byte(b.String())
	same(t, "large.hcl", src, 512, 4096)

}

// Pieces are parsed concurrently: errors in several of them still give the
// whole-file parse's diagnostics, on every run.
func TestErrorsInSeveralPieces(t *testing.T) {
	var b strings.Builder
	b.WriteString("play \"p\" {\n")
	for i := range 400 {
		switch i % 97 {
		case 10:
			fmt.Fprintf(&b, "  step \"s%d\" {\n    x = = 1\n  }\n", i) // a syntax error
		case 50:
			fmt.Fprintf(&b, "  step \"s%d\" {\n    x = \"unclosed\n  }\n", i)
		default:
			fmt.Fprintf(&b, "  step \"s%d\" {\n    x = %d\n  }\n", i, i)
		}
	}
	b.WriteString("}\na = 1\nb = 2\na = 3\n")
	src := []byte(b.String())
	whole, wd := hclsyntax.ParseConfig(src, "errs.hcl", hcl.Pos{Line: 1, Column: 1})
	require.True(t, wd.HasErrors())
	for range 20 {
		got, gd := parse(src, "errs.hcl", 512, 256)
		require.Equal(t, wd.Error(), gd.Error())
		require.True(t, reflect.DeepEqual(whole.Body, got.Body), "the body differs from the whole-file parse")
		sameRead(t, src, "errs.hcl", 512, 256, whole.Body.(*hclsyntax.Body), wd)
	}
}

func FuzzPieces(f *testing.F) {
	for _, s := range []string{"a = 1\nb {\n  c = \"${d}\"\n}\n", "x = <<E\n}\nE\n", "p {\n  q {\n    r = [1,\n2]\n  }\n}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		if len(src) > 4096 {
			return
		}
		whole, wd := hclsyntax.ParseConfig(src, "f.hcl", hcl.Pos{Line: 1, Column: 1})
		got, gd := parse(src, "f.hcl", 8, 16)
		if wd.Error() != gd.Error() {
			t.Fatalf("diagnostics differ:\n%s\n%s", wd.Error(), gd.Error())
		}
		if !wd.HasErrors() && !reflect.DeepEqual(whole.Body, got.Body) {
			t.Fatal("the body differs from the whole-file parse")
		}
		sameRead(t, src, "f.hcl", 8, 16, whole.Body.(*hclsyntax.Body), wd)
	})
}

// Each reads a large file piece by piece, with the pieces parsed ahead of
// the reader only as far as the CPUs need, and records a file without the
// syntax tree that still names the block of an offset.
func TestEachReadsAsItParses(t *testing.T) {
	var b strings.Builder
	for i := range 8000 {
		fmt.Fprintf(&b, "host \"h%d\" {\n  address = \"10.0.%d.%d\"\n}\n", i, i/250, i%250)
	}
	src := []byte(b.String())

	c, ok := plan(src, "big.hcl", minSplit, 512)
	require.True(t, ok)
	pieces := len(c.parsed)
	require.Greater(t, pieces, 4*c.feed.ahead, "enough pieces for the bound to matter")
	most, reads := 0, 0
	_, ok = c.items(0, len(src), true, func(*hclsyntax.Body, hcl.Range) bool {
		if reads == 0 {
			time.Sleep(100 * time.Millisecond) // time for the feeder to run as far ahead as it may
		}
		reads++
		ready := 0
		for _, pc := range c.parsed {
			select {
			case <-pc.done:
				ready++
			default:
			}
		}
		most = max(most, ready)
		return true
	})
	c.feed.stop()
	require.True(t, ok)
	assert.Equal(t, pieces, reads)
	assert.LessOrEqual(t, most, c.feed.ahead, "parsed pieces waiting for the reader")
	assert.Positive(t, most)

	p := hclparse.NewParser()
	var hosts []string
	read := func(body *hclsyntax.Body) {
		for _, blk := range body.Blocks {
			hosts = append(hosts, blk.Labels[0])
		}
	}
	f, diags := Each(p, src, "big.hcl", read, func() { t.Fatal("reset without a fallback") })
	require.False(t, diags.HasErrors(), diags.Error())
	require.Len(t, hosts, 8000)
	assert.Equal(t, "h7999", hosts[7999])
	assert.Same(t, f, p.Files()["big.hcl"])
	assert.Empty(t, f.Body.(*hclsyntax.Body).Blocks, "the file keeps no syntax tree")
	cs, ok := f.Nav.(interface {
		ContextString(int) string
		ContextDefRange(int) hcl.Range
	})
	require.True(t, ok)
	at := strings.Index(b.String(), `"10.0.4.17"`)
	assert.Equal(t, `host "h1017"`, cs.ContextString(at))
	assert.Equal(t, 3*1017+1, cs.ContextDefRange(at).Start.Line)
	assert.Empty(t, cs.ContextString(len(src)))

	// A file already recorded is read again from its recorded source.
	hosts = nil
	again, diags := Each(p, []byte("other"), "big.hcl", read, func() {})
	require.False(t, diags.HasErrors())
	assert.Same(t, f, p.Files()["big.hcl"])
	assert.Equal(t, f.Bytes, again.Bytes)
	assert.Len(t, hosts, 8000)
}
