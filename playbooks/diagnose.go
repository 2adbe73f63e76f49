package playbooks

import (
	"bytes"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// MaxDiagnostics is how many diagnostics WriteDiagnostics renders in full;
// the rest are counted. Rendering one scans its whole file for the snippet,
// so thousands of them (a file of random bytes) would cost minutes.
const MaxDiagnostics = 20

// Diagnose prints diags with source snippets from files (File.Sources,
// merged with the inventory parser's files by the caller), wrapped at 100
// columns. See WriteDiagnostics.
func Diagnose(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, color bool) error {
	return WriteDiagnostics(w, files, diags, color)
}

// WriteDiagnostics writes each diagnostic as a compiler-style
// "file:line:col: " followed by hcl's text with a source snippet, at most
// MaxDiagnostics of them and then how many more there are. Control
// characters and invalid UTF-8, in the quoted source lines as in the
// messages, are written escaped (\x1b), so a hostile file cannot drive the
// terminal; color adds hcl's own color codes.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, color bool) error {
	ew := &escapeWriter{w: w, color: color}
	wr := hcl.NewDiagnosticTextWriter(ew, files, 100, color)
	for i, d := range diags {
		if i == MaxDiagnostics {
			_, err := fmt.Fprintf(ew, "… and %d more (%d errors in all).\n", len(diags)-i, len(diags.Errs()))
			return err
		}
		if d.Subject != nil {
			if _, err := fmt.Fprintf(ew, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column); err != nil {
				return err
			}
		}
		if err := wr.WriteDiagnostic(d); err != nil {
			return err
		}
	}
	return nil
}

// colorCodes are the escape sequences hcl's text writer itself writes.
var colorCodes = [][]byte{[]byte("\x1b[31m"), []byte("\x1b[33m"), []byte("\x1b[0m"), []byte("\x1b[1;4m")}

// escapeWriter escapes what could drive a terminal: C0 controls but
// newline and tab, DEL, C1 controls and invalid UTF-8. With color, hcl's
// own color codes pass (it writes each within one Write).
type escapeWriter struct {
	w     io.Writer
	color bool
}

func (e *escapeWriter) Write(p []byte) (int, error) {
	var out bytes.Buffer
	for i := 0; i < len(p); {
		c := p[i]
		if c == 0x1b && e.color {
			if code := colorCode(p[i:]); code > 0 {
				out.Write(p[i : i+code])
				i += code
				continue
			}
		}
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\n' && c != '\t' || c == 0x7f {
				fmt.Fprintf(&out, `\x%02x`, c)
			} else {
				out.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&out, `\x%02x`, c)
		case r >= 0x80 && r <= 0x9f:
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			out.Write(p[i : i+size])
		}
		i += size
	}
	if _, err := e.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

func colorCode(p []byte) int {
	for _, code := range colorCodes {
		if bytes.HasPrefix(p, code) {
			return len(code)
		}
	}
	return 0
}
