package inventories

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Limits on hostile input. HCL's parser and evaluator recurse once per
// nesting level and per operator of a chain, and Go aborts the process on a
// stack overflow, so such input is refused before it is parsed.
const (
	// MaxFileSize is the largest file ReadFile reads: inventories,
	// playbooks, file() and templatefile() sources, and module sources.
	MaxFileSize = 16 << 20
	// MaxNesting is how deep brackets, interpolations and template
	// directives may nest.
	MaxNesting = 128
	// MaxOperators is how many operator characters one expression may hold
	// (per bracket level): a chain such as 1+1+…+1 or !!…!x is evaluated
	// recursively.
	MaxOperators = 500
)

// ReadFile reads the file at path for iklim: it must be a regular file of
// at most MaxFileSize bytes. A device (/dev/zero), a FIFO or a directory is
// refused without reading it, so a hostile path can neither exhaust memory
// nor block. Errors name the path.
func ReadFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	// O_NONBLOCK: should the path become a FIFO after Stat, open must not
	// wait for a writer; Fstat below refuses it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%s is larger than %d MiB", path, MaxFileSize>>20)
	}
	return b, nil
}

func regular(path string, fi os.FileInfo) error {
	switch {
	case fi.IsDir():
		return fmt.Errorf("%s is a directory, not a file", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	case fi.Size() > MaxFileSize:
		return fmt.Errorf("%s is larger than %d MiB (%d bytes)", path, MaxFileSize>>20, fi.Size())
	}
	return nil
}

// errTooLarge is returned by ValueSizeCheck for a value over the limit.
var errTooLarge = errors.New("value too large")

// elementCost is what ValueSize counts per value besides string bytes:
// about what a cty value in a collection costs in memory.
const elementCost = 64

// ValueSize estimates the memory a value holds, in bytes (string bytes plus
// elementCost per value), stopping early once it exceeds limit. It lets
// callers refuse runaway values before they grow further. A value shared
// in several places counts each time: that is what copying it would cost.
func ValueSize(v cty.Value, limit int) int {
	n := 0
	_ = cty.Walk(v, func(_ cty.Path, v cty.Value) (bool, error) {
		if n > limit {
			return false, errTooLarge
		}
		n += elementCost
		if v.IsKnown() && !v.IsNull() && v.Type() == cty.String {
			s, _ := v.Unmark()
			n += len(s.AsString())
		}
		return true, nil
	})
	return n
}

// HasNUL reports whether a string anywhere in v (keys included) holds a NUL
// byte, which no remote path, command or file content of a playbook or
// inventory may carry.
func HasNUL(v cty.Value) bool {
	found := false
	_ = cty.Walk(v, func(_ cty.Path, v cty.Value) (bool, error) {
		if found {
			return false, nil
		}
		if !v.IsKnown() || v.IsNull() {
			return true, nil
		}
		v, _ = v.Unmark()
		ty := v.Type()
		switch {
		case ty == cty.String:
			found = strings.IndexByte(v.AsString(), 0) >= 0
		case ty.IsMapType() || ty.IsObjectType():
			if ty.IsObjectType() {
				for k := range ty.AttributeTypes() {
					found = found || strings.IndexByte(k, 0) >= 0
				}
			} else {
				for it := v.ElementIterator(); it.Next(); {
					k, _ := it.Element()
					found = found || strings.IndexByte(k.AsString(), 0) >= 0
				}
			}
		}
		return !found, nil
	})
	return found
}

// CheckSource refuses HCL source that the parser must not see: NUL bytes,
// nesting deeper than MaxNesting and operator chains longer than
// MaxOperators. It returns at most one diagnostic, with file:line:col.
func CheckSource(src []byte, filename string) hcl.Diagnostics {
	return checkSource(src, filename, modeCode)
}

// CheckTemplate is CheckSource for a template (templatefile's file):
// literal text with ${…} and %{…} sequences.
func CheckTemplate(src []byte, filename string) hcl.Diagnostics {
	return checkSource(src, filename, modeTemplate)
}

const (
	modeCode = iota
	modeQuoted
	modeHeredoc
	modeTemplate
)

type frame struct {
	kind   byte // ( [ { or $ (an interpolation or directive)
	ops    int
	ret    int    // the mode an interpolation returns to
	marker string // the heredoc marker, when ret is modeHeredoc
}

func checkSource(src []byte, filename string, start int) hcl.Diagnostics {
	if i := bytes.IndexByte(src, 0); i >= 0 {
		return sourceDiag(src, filename, i, "NUL byte in source", "The file holds a NUL byte; HCL files are text.")
	}
	mode := start
	root := &frame{kind: '{'}
	stack := []*frame{}
	top := func() *frame {
		if len(stack) == 0 {
			return root
		}
		return stack[len(stack)-1]
	}
	directives := 0 // open %{if}/%{for} in templates
	marker := ""
	lineStart := true
	push := func(i int, f *frame) hcl.Diagnostics {
		stack = append(stack, f)
		if len(stack)+directives > MaxNesting {
			return sourceDiag(src, filename, i, "Nesting too deep",
				fmt.Sprintf("Brackets, interpolations and template directives nest more than %d levels deep here.", MaxNesting))
		}
		return nil
	}
	// directive counts %{ if/for } and %{ endif/endfor } at src[i:], just
	// after "%{".
	directive := func(i int) {
		j := i
		for j < len(src) && (src[j] == '~' || src[j] == ' ' || src[j] == '\t') {
			j++
		}
		k := j
		for k < len(src) && (src[k] >= 'a' && src[k] <= 'z') {
			k++
		}
		switch string(src[j:k]) {
		case "if", "for":
			directives++
		case "endif", "endfor":
			if directives > 0 {
				directives--
			}
		}
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch mode {
		case modeQuoted:
			switch {
			case c == '\\':
				i++
			case c == '"', c == '\n':
				mode = modeCode
			case (c == '$' || c == '%') && i+1 < len(src) && src[i+1] == '{':
				if c == '%' {
					directive(i + 2)
				}
				if d := push(i, &frame{kind: '$', ret: modeQuoted}); d != nil {
					return d
				}
				mode = modeCode
				i++
			case (c == '$' || c == '%') && i+2 < len(src) && src[i+1] == c && src[i+2] == '{':
				i += 2 // $${ and %%{ are literal
			}
			continue
		case modeHeredoc, modeTemplate:
			if mode == modeHeredoc && lineStart {
				end := bytes.IndexByte(src[i:], '\n')
				line := src[i:]
				if end >= 0 {
					line = src[i : i+end]
				}
				if strings.TrimSpace(string(line)) == marker {
					mode = modeCode
					i += len(line) - 1
					lineStart = false
					continue
				}
			}
			lineStart = c == '\n'
			switch {
			case (c == '$' || c == '%') && i+2 < len(src) && src[i+1] == c && src[i+2] == '{':
				i += 2
			case (c == '$' || c == '%') && i+1 < len(src) && src[i+1] == '{':
				if c == '%' {
					directive(i + 2)
				}
				if d := push(i, &frame{kind: '$', ret: mode, marker: marker}); d != nil {
					return d
				}
				mode = modeCode
				i++
			}
			continue
		}
		// modeCode
		switch c {
		case '#':
			i = lineEnd(src, i) - 1 // the newline itself is seen next
		case '/':
			switch {
			case i+1 < len(src) && src[i+1] == '/':
				i = lineEnd(src, i) - 1
			case i+1 < len(src) && src[i+1] == '*':
				i = skipTo(src, i+2, "*/") + 1
			default:
				if d := countOp(src, filename, i, top()); d != nil {
					return d
				}
			}
		case '"':
			mode = modeQuoted
		case '<':
			if m, next, ok := heredocStart(src, i); ok {
				marker, mode, lineStart = m, modeHeredoc, true
				i = next - 1
				continue
			}
			if d := countOp(src, filename, i, top()); d != nil {
				return d
			}
		case '(', '[', '{':
			if d := push(i, &frame{kind: c}); d != nil {
				return d
			}
		case ')', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case '}':
			if len(stack) > 0 {
				f := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if f.kind == '$' {
					mode, marker = f.ret, f.marker
					lineStart = false
				}
			}
		case ',':
			top().ops = 0
		case '\n':
			if t := top(); t.kind == '{' {
				t.ops = 0
			}
		case '!', '-', '+', '*', '%', '>', '?', '&', '|':
			if d := countOp(src, filename, i, top()); d != nil {
				return d
			}
		case '=':
			if i+1 < len(src) && src[i+1] == '=' {
				if d := countOp(src, filename, i, top()); d != nil {
					return d
				}
				i++
			}
		}
	}
	return nil
}

func countOp(src []byte, filename string, i int, f *frame) hcl.Diagnostics {
	f.ops++
	if f.ops > MaxOperators {
		return sourceDiag(src, filename, i, "Expression too long",
			fmt.Sprintf("One expression holds more than %d operators; split it into locals.", MaxOperators))
	}
	return nil
}

// lineEnd is the index of the newline ending the line at i, or len(src).
func lineEnd(src []byte, i int) int {
	if j := bytes.IndexByte(src[i:], '\n'); j >= 0 {
		return i + j
	}
	return len(src)
}

// skipTo is the index just past the next sep at or after i, or len(src).
func skipTo(src []byte, i int, sep string) int {
	j := bytes.Index(src[i:], []byte(sep))
	if j < 0 {
		return len(src)
	}
	return i + j + len(sep)
}

// heredocStart reads "<<MARKER\n" or "<<-MARKER\n" at src[i:] and returns
// the marker and the index of the first line of the body.
func heredocStart(src []byte, i int) (string, int, bool) {
	j := i + 2
	if j > len(src) || src[i+1] != '<' {
		return "", 0, false
	}
	if j < len(src) && src[j] == '-' {
		j++
	}
	k := j
	for k < len(src) && (src[k] == '_' || src[k] == '-' || src[k] >= 'a' && src[k] <= 'z' || src[k] >= 'A' && src[k] <= 'Z' || src[k] >= '0' && src[k] <= '9') {
		k++
	}
	if k == j || k >= len(src) || (src[k] != '\n' && src[k] != '\r') {
		return "", 0, false
	}
	next := skipTo(src, k, "\n")
	return string(src[j:k]), next, true
}

// sourceDiag is an error at byte offset i of src.
func sourceDiag(src []byte, filename string, i int, summary, detail string) hcl.Diagnostics {
	line := 1 + bytes.Count(src[:i], []byte("\n"))
	ls := bytes.LastIndexByte(src[:i], '\n') + 1
	col := 1 + utf8.RuneCount(src[ls:i])
	pos := hcl.Pos{Line: line, Column: col, Byte: i}
	end := hcl.Pos{Line: line, Column: col + 1, Byte: i + 1}
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  &hcl.Range{Filename: filename, Start: pos, End: end},
	}}
}
