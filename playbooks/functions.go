package playbooks

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/iklimco/iklim/inventories"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// Functions returns the functions playbook expressions can call: the
// inventory's (the go-cty standard library under Terraform's names, and env),
// plus can/try, type conversions, hashes and base64, string predicates, a
// length that counts objects too, and file and templatefile with paths
// relative to baseDir.
func Functions(baseDir string) map[string]function.Function {
	fns := inventories.Functions()
	for name, f := range map[string]function.Function{
		"can":          tryfunc.CanFunc,
		"try":          tryfunc.TryFunc,
		"length":       lengthFunc,
		"tobool":       stdlib.MakeToFunc(cty.Bool),
		"tolist":       stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"tomap":        stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"tonumber":     stdlib.MakeToFunc(cty.Number),
		"toset":        stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
		"tostring":     stdlib.MakeToFunc(cty.String),
		"base64decode": base64DecodeFunc,
		"base64encode": base64EncodeFunc,
		"endswith":     stringPredicate(strings.HasSuffix),
		"md5":          hashFunc(md5.New),
		"sha1":         hashFunc(sha1.New),
		"sha256":       hashFunc(sha256.New),
		"sha512":       hashFunc(sha512.New),
		"startswith":   stringPredicate(strings.HasPrefix),
		"strcontains":  stringPredicate(strings.Contains),
	} {
		fns[name] = f
	}
	fns["file"] = fileFunc(baseDir)
	fns["templatefile"] = templateFileFunc(baseDir, fns)
	return fns
}

func stringArg(name string) function.Parameter {
	return function.Parameter{Name: name, Type: cty.String}
}

func hashFunc(h func() hash.Hash) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{stringArg("str")},
		Type:   function.StaticReturnType(cty.String),
		RefineResult: func(b *cty.RefinementBuilder) *cty.RefinementBuilder {
			return b.NotNull()
		},
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			s := h()
			s.Write([]byte(args[0].AsString()))
			return cty.StringVal(hex.EncodeToString(s.Sum(nil))), nil
		},
	})
}

func stringPredicate(f func(s, sub string) bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{stringArg("str"), stringArg("substr")},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.BoolVal(f(args[0].AsString(), args[1].AsString())), nil
		},
	})
}

// lengthFunc is stdlib's length that also counts an object's attributes
// (results and host vars are objects) and a string's characters, as
// Terraform's does.
var lengthFunc = function.New(&function.Spec{
	Params: []function.Parameter{{
		Name:             "value",
		Type:             cty.DynamicPseudoType,
		AllowDynamicType: true,
		AllowUnknown:     true,
		AllowMarked:      true,
	}},
	Type: func(args []cty.Value) (cty.Type, error) {
		ty := args[0].Type()
		switch {
		case ty == cty.DynamicPseudoType, ty == cty.String, ty.IsObjectType():
			return cty.Number, nil
		default:
			return stdlib.LengthFunc.ReturnType([]cty.Type{ty})
		}
	},
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		v, marks := args[0].Unmark()
		ty := v.Type()
		switch {
		case ty == cty.DynamicPseudoType || !v.IsKnown():
			return cty.UnknownVal(cty.Number).WithMarks(marks), nil
		case ty.IsObjectType():
			return cty.NumberIntVal(int64(len(ty.AttributeTypes()))).WithMarks(marks), nil
		case ty == cty.String:
			n, err := stdlib.Strlen(v)
			return n.WithMarks(marks), err
		default:
			n, err := stdlib.Length(v)
			return n.WithMarks(marks), err
		}
	},
})

var base64EncodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{stringArg("str")},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
	},
})

var base64DecodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{stringArg("str")},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		b, err := base64.StdEncoding.DecodeString(args[0].AsString())
		if err != nil {
			return cty.UnknownVal(cty.String), function.NewArgErrorf(0, "invalid base64: %s", err)
		}
		if !utf8.Valid(b) {
			return cty.UnknownVal(cty.String), function.NewArgErrorf(0, "the decoded bytes are not valid UTF-8")
		}
		return cty.StringVal(string(b)), nil
	},
})

func resolvePath(baseDir, p string) string {
	if strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[2:])
		}
	}
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(baseDir, p)
}

func readText(baseDir, p string) (string, error) {
	b, err := inventories.ReadFile(resolvePath(baseDir, p))
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%s is not valid UTF-8", p)
	}
	return string(b), nil
}

func fileFunc(baseDir string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{stringArg("path")},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			s, err := readText(baseDir, args[0].AsString())
			if err != nil {
				return cty.UnknownVal(cty.String), function.NewArgError(0, err)
			}
			return cty.StringVal(s), nil
		},
	})
}

// templateFileFunc renders a file as an HCL template with the variables of
// its second argument and the playbook functions (templatefile excepted).
// Sensitive marks on the variables carry over to the result.
func templateFileFunc(baseDir string, fns map[string]function.Function) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{
			stringArg("path"),
			{Name: "vars", Type: cty.DynamicPseudoType},
		},
		Type: function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			src, err := readText(baseDir, p)
			if err != nil {
				return cty.UnknownVal(cty.String), function.NewArgError(0, err)
			}
			vars := args[1]
			if !vars.Type().IsObjectType() && !vars.Type().IsMapType() {
				return cty.UnknownVal(cty.String), function.NewArgErrorf(1, "vars must be an object or a map")
			}
			if !vars.IsWhollyKnown() {
				return cty.UnknownVal(cty.String), nil
			}
			diags := inventories.CheckTemplate([]byte(src), p)
			if diags.HasErrors() {
				return cty.UnknownVal(cty.String), function.NewArgErrorf(0, "%s", diags.Error())
			}
			expr, diags := hclsyntax.ParseTemplate([]byte(src), p, hcl.InitialPos)
			if diags.HasErrors() {
				return cty.UnknownVal(cty.String), function.NewArgErrorf(0, "%s", diags.Error())
			}
			ctx := &hcl.EvalContext{Variables: map[string]cty.Value{}, Functions: map[string]function.Function{}}
			if !vars.IsNull() {
				for it := vars.ElementIterator(); it.Next(); {
					k, v := it.Element()
					name := k.AsString()
					if !hclsyntax.ValidIdentifier(name) {
						return cty.UnknownVal(cty.String), function.NewArgErrorf(1, "template variable %q is not a valid identifier", name)
					}
					ctx.Variables[name] = v
				}
			}
			for name, f := range fns {
				if name != "templatefile" {
					ctx.Functions[name] = f
				}
			}
			val, diags := expr.Value(ctx)
			if diags.HasErrors() {
				return cty.UnknownVal(cty.String), function.NewArgErrorf(0, "%s", diags.Error())
			}
			val, err = convert.Convert(val, cty.String)
			if err != nil {
				return cty.UnknownVal(cty.String), function.NewArgErrorf(0, "%s: %s", p, err)
			}
			if inventories.ValueSize(val, inventories.MaxResultSize) > inventories.MaxResultSize {
				return cty.UnknownVal(cty.String), function.NewArgErrorf(0, "%s: the result is larger than %d MiB", p, inventories.MaxResultSize>>20)
			}
			return val, nil
		},
	})
}
