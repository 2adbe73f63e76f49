package backup

import (
	"bytes"
	"encoding/json"

	"github.com/iklimco/iklim/modules"
)

// redactJSON redacts every string (and object key) inside a JSON document
// and reports whether anything was redacted. Redacting the decoded strings,
// not the encoded text, finds a secret however JSON escaped it.
func redactJSON(doc []byte, sec *modules.Secrets) ([]byte, bool, error) {
	if sec == nil {
		return doc, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false, err
	}
	changed := false
	v = redactValue(v, sec, &changed)
	if !changed {
		return doc, false, nil
	}
	out, err := marshal(v)
	return out, true, err
}

func redactValue(v any, sec *modules.Secrets, changed *bool) any {
	switch t := v.(type) {
	case string:
		r := sec.Redact(t)
		if r != t {
			*changed = true
		}
		return r
	case []any:
		for i := range t {
			t[i] = redactValue(t[i], sec, changed)
		}
		return t
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			rk := sec.Redact(k)
			if rk != k {
				*changed = true
			}
			out[rk] = redactValue(x, sec, changed)
		}
		return out
	default:
		return v
	}
}

// redactString redacts s and reports whether it held a secret.
func redactString(s string, sec *modules.Secrets) (string, bool) {
	r := sec.Redact(s)
	return r, r != s
}

// diffHasSecret reports whether a change's diff text shows a known secret:
// then the files it replaces most likely held one too.
func diffHasSecret(d *modules.Diff, sec *modules.Secrets) bool {
	if d == nil || sec == nil {
		return false
	}
	_, a := redactString(d.Before, sec)
	_, b := redactString(d.After, sec)
	return a || b
}
