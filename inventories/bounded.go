package inventories

import (
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// MaxResultSize bounds what one function call may return, in bytes of
// strings plus a few per element (see ValueSize). The functions that can
// make a result much larger than their arguments (format's widths, indent,
// setproduct, replace, join, concat) check their arguments first, so a
// call such as format("%2000000000s", "") is refused before it allocates.
const MaxResultSize = MaxFileSize

// MaxArgsSize bounds the arguments of one function call, as ValueSize
// counts them: a list holding one large list many times is cheap to build
// but not to flatten or encode.
const MaxArgsSize = 2 * MaxResultSize

// bounded wraps f: pre, if set, refuses arguments that promise a result over
// MaxResultSize, and every result over it is refused after the call.
func bounded(name string, f function.Function, pre func(args []cty.Value) error) function.Function {
	spec := &function.Spec{
		Description: f.Description(),
		Params:      f.Params(),
		VarParam:    f.VarParam(),
		Type: func(args []cty.Value) (cty.Type, error) {
			return f.ReturnTypeForValues(args)
		},
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			size := 0
			for _, a := range args {
				size += ValueSize(a, MaxArgsSize)
				if size > MaxArgsSize {
					return cty.NilVal, fmt.Errorf("%s: the arguments are larger than %d MiB", name, MaxArgsSize>>20)
				}
			}
			if pre != nil && allKnown(args) {
				if err := pre(args); err != nil {
					return cty.NilVal, err
				}
			}
			v, err := f.Call(args)
			if err != nil {
				return v, err
			}
			if ValueSize(v, MaxResultSize) > MaxResultSize {
				return cty.NilVal, fmt.Errorf("%s: the result would be larger than %d MiB", name, MaxResultSize>>20)
			}
			return v, nil
		},
	}
	return function.New(spec)
}

func allKnown(args []cty.Value) bool {
	for _, a := range args {
		if !a.IsWhollyKnown() {
			return false
		}
	}
	return true
}

func tooLarge(name string) error {
	return fmt.Errorf("%s: the result would be larger than %d MiB", name, MaxResultSize>>20)
}

// verbRe matches a format verb's flags, width and precision.
var verbRe = regexp.MustCompile(`%[-+# 0]*([0-9]*)(?:\.([0-9]*))?`)

// formatWidth is the largest width or precision in a format string.
func formatWidth(format string) int {
	widest := 0
	for _, m := range verbRe.FindAllStringSubmatch(format, -1) {
		for _, n := range m[1:] {
			if n == "" {
				continue
			}
			w, err := strconv.Atoi(n)
			if err != nil {
				return MaxResultSize + 1 // too long to be an int
			}
			widest = max(widest, w)
		}
	}
	return widest
}

func stringOf(v cty.Value) string {
	v, _ = v.Unmark()
	if v.IsNull() || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

// length is the number of elements of a collection, 0 for anything else.
func length(v cty.Value) int {
	v, _ = v.Unmark()
	if v.IsNull() || !v.IsKnown() || !v.CanIterateElements() {
		return 0
	}
	return v.LengthInt()
}

func preFormat(args []cty.Value) error {
	if formatWidth(stringOf(args[0])) > MaxResultSize {
		return tooLarge("format")
	}
	return nil
}

func preFormatList(args []cty.Value) error {
	n := 1
	for _, a := range args[1:] {
		n = max(n, length(a))
	}
	if w := formatWidth(stringOf(args[0])); w > MaxResultSize || w*n > MaxResultSize {
		return tooLarge("formatlist")
	}
	return nil
}

func preIndent(args []cty.Value) error {
	v, _ := args[0].Unmark()
	if v.IsNull() {
		return nil
	}
	bf := v.AsBigFloat()
	lines := strings.Count(stringOf(args[1]), "\n") + 1
	if bf.Cmp(big.NewFloat(float64(MaxResultSize))) > 0 {
		return tooLarge("indent")
	}
	n, _ := bf.Int64()
	if n*int64(lines) > MaxResultSize {
		return tooLarge("indent")
	}
	return nil
}

func preSetProduct(args []cty.Value) error {
	total := 1
	for _, a := range args {
		total *= max(length(a), 1)
		if total*(len(args)+1)*elementCost > MaxResultSize {
			return tooLarge("setproduct")
		}
	}
	return nil
}

func preReplace(args []cty.Value) error {
	s, sub, repl := stringOf(args[0]), stringOf(args[1]), stringOf(args[2])
	n := strings.Count(s, sub) // len(s)+1 for "": repl goes between every rune
	if n*len(repl) > MaxResultSize+len(s) {
		return tooLarge("replace")
	}
	return nil
}

func preJoin(args []cty.Value) error {
	sep := len(stringOf(args[0]))
	n := 0
	for _, a := range args[1:] {
		n += length(a)
	}
	if sep*n > MaxResultSize {
		return tooLarge("join")
	}
	return nil
}

func preConcat(args []cty.Value) error {
	n := 0
	for _, a := range args {
		n += length(a)
	}
	if n*elementCost > MaxResultSize {
		return tooLarge("concat")
	}
	return nil
}

func preRegexReplace(args []cty.Value) error {
	s, repl := stringOf(args[0]), stringOf(args[2])
	if (len(s)+1)*len(repl) <= MaxResultSize {
		return nil
	}
	re, err := regexp.Compile(stringOf(args[1]))
	if err != nil {
		return nil // the function reports it
	}
	limit := (MaxResultSize+len(s))/len(repl) + 1 // count no further than needed
	if len(re.FindAllStringIndex(s, limit))*len(repl) > MaxResultSize+len(s) {
		return tooLarge("regex_replace")
	}
	return nil
}

// boundedFunctions wraps every function so that no call returns more than
// MaxResultSize, with argument checks for those that can amplify.
func boundedFunctions(fns map[string]function.Function) map[string]function.Function {
	pre := map[string]func([]cty.Value) error{
		"format":        preFormat,
		"formatlist":    preFormatList,
		"indent":        preIndent,
		"setproduct":    preSetProduct,
		"replace":       preReplace,
		"regex_replace": preRegexReplace,
		"join":          preJoin,
		"concat":        preConcat,
	}
	out := make(map[string]function.Function, len(fns))
	for name, f := range fns {
		out[name] = bounded(name, f, pre[name])
	}
	return out
}
