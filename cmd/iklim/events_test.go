package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/printer"
	"github.com/stretchr/testify/require"
)

// schemaCheck validates v against the JSON Schema (2020-12) subset that
// docs/events.schema.json uses; a keyword it does not know is an error, so
// the schema cannot say more than is checked.
type schemaCheck struct{ root map[string]any }

func (c schemaCheck) errs(s map[string]any, v any, at string) []string {
	var errs []string
	fail := func(f string, a ...any) { errs = append(errs, at+": "+fmt.Sprintf(f, a...)) }
	for k, sv := range s {
		switch k {
		case "$schema", "$id", "title", "description", "$defs":
		case "$ref":
			name, ok := strings.CutPrefix(sv.(string), "#/$defs/")
			if !ok {
				fail("unsupported $ref %v", sv)
				continue
			}
			errs = append(errs, c.errs(c.root["$defs"].(map[string]any)[name].(map[string]any), v, at)...)
		case "type":
			types, ok := sv.([]any)
			if !ok {
				types = []any{sv}
			}
			if !slices.ContainsFunc(types, func(t any) bool { return jsonType(v, t.(string)) }) {
				fail("%v is not of type %v", v, sv)
			}
		case "const":
			if !jsonEqual(v, sv) {
				fail("%v is not %v", v, sv)
			}
		case "enum":
			if !slices.ContainsFunc(sv.([]any), func(e any) bool { return jsonEqual(v, e) }) {
				fail("%v is not one of %v", v, sv)
			}
		case "format":
			if str, ok := v.(string); ok && sv == "date-time" {
				if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
					fail("%q is not a date-time", str)
				}
			} else if sv != "date-time" {
				fail("unsupported format %v", sv)
			}
		case "pattern":
			if str, ok := v.(string); ok && !regexp.MustCompile(sv.(string)).MatchString(str) {
				fail("%q does not match %s", str, sv)
			}
		case "minimum":
			if n, ok := v.(json.Number); ok {
				f, _ := n.Float64()
				if f < sv.(float64) {
					fail("%v is below %v", n, sv)
				}
			}
		case "required":
			if obj, ok := v.(map[string]any); ok {
				for _, r := range sv.([]any) {
					if _, ok := obj[r.(string)]; !ok {
						fail("%q is missing", r)
					}
				}
			}
		case "properties":
			if obj, ok := v.(map[string]any); ok {
				for name, ps := range sv.(map[string]any) {
					if pv, ok := obj[name]; ok {
						errs = append(errs, c.errs(ps.(map[string]any), pv, at+"."+name)...)
					}
				}
			}
		case "additionalProperties":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			props, _ := s["properties"].(map[string]any)
			for name, pv := range obj {
				if _, known := props[name]; known {
					continue
				}
				switch ap := sv.(type) {
				case bool:
					if !ap {
						fail("%q is not a documented field", name)
					}
				case map[string]any:
					errs = append(errs, c.errs(ap, pv, at+"."+name)...)
				}
			}
		case "items":
			if arr, ok := v.([]any); ok {
				for i, e := range arr {
					errs = append(errs, c.errs(sv.(map[string]any), e, fmt.Sprintf("%s[%d]", at, i))...)
				}
			}
		case "oneOf":
			n := 0
			var why []string
			for _, sub := range sv.([]any) {
				e := c.errs(sub.(map[string]any), v, at)
				if len(e) == 0 {
					n++
				}
				why = append(why, e...)
			}
			if n != 1 {
				fail("matches %d of oneOf, want 1: %v", n, why)
			}
		default:
			fail("schema keyword %q is not supported by the checker", k)
		}
	}
	return errs
}

func jsonType(v any, t string) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := strconv.ParseInt(string(n), 10, 64)
		return err == nil
	case "number":
		_, ok := v.(json.Number)
		return ok
	}
	return false
}

func jsonEqual(a, b any) bool {
	if n, ok := a.(json.Number); ok {
		f, _ := n.Float64()
		return f == b
	}
	return a == b
}

func loadEventSchema(t *testing.T) schemaCheck {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "events.schema.json"))
	require.NoError(t, err)
	var root map[string]any
	require.NoError(t, json.Unmarshal(b, &root))
	return schemaCheck{root}
}

func (c schemaCheck) line(t *testing.T, line []byte) (map[string]any, []string) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var v map[string]any
	require.NoError(t, d.Decode(&v), "%s", line)
	return v, c.errs(c.root, v, "event")
}

// eventTypes are the EventType constants runner/events.go declares.
func eventTypes(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "..", "runner", "events.go"), nil, 0)
	require.NoError(t, err)
	var out []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			vs := sp.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "EventType" {
				for _, v := range vs.Values {
					s, err := strconv.Unquote(v.(*ast.BasicLit).Value)
					require.NoError(t, err)
					out = append(out, s)
				}
			}
		}
	}
	require.NotEmpty(t, out)
	return out
}

// TestEventsDocumented: every event type the runner declares is in the
// schema and has a section in docs/events.md, which names the schema file
// and version; and the checker rejects what the schema forbids.
func TestEventsDocumented(t *testing.T) {
	c := loadEventSchema(t)
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "events.md"))
	require.NoError(t, err)
	enum := c.root["properties"].(map[string]any)["type"].(map[string]any)["enum"].([]any)
	for _, typ := range eventTypes(t) {
		require.Contains(t, enum, typ, "docs/events.schema.json lacks event type %q", typ)
		require.Contains(t, string(doc), "### `"+typ+"`", "docs/events.md lacks a section for %q", typ)
	}
	require.Len(t, enum, len(eventTypes(t)), "the schema lists an event type the runner does not have")
	require.Contains(t, string(doc), "events.schema.json")
	require.Contains(t, string(doc), fmt.Sprintf(`"schema": %d`, printer.EventSchema))

	// The examples in the doc are valid events.
	examples := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	require.Len(t, examples, len(eventTypes(t)), "one example per event type")
	for _, m := range examples {
		_, errs := c.line(t, []byte(m[1]))
		require.Empty(t, errs, "docs/events.md example %s", m[1])
	}

	good := `{"schema":1,"type":"warning","time":"2026-11-29T04:00:00.123Z","error":"x"}`
	_, errs := c.line(t, []byte(good))
	require.Empty(t, errs)
	for _, bad := range []string{
		`{"type":"warning","time":"2026-11-29T04:00:00Z","error":"x"}`,            // no schema
		`{"schema":2,"type":"warning","time":"2026-11-29T04:00:00Z","error":"x"}`, // other version
		`{"schema":1,"type":"warning","time":"yesterday","error":"x"}`,            // time
		`{"schema":1,"type":"warning","time":"2026-11-29T04:00:00Z"}`,             // warning without error
		`{"schema":1,"type":"warning","time":"2026-11-29T04:00:00Z","error":"x","colour":1}`,
		`{"schema":1,"type":"progress","time":"2026-11-29T04:00:00Z"}`,
		`{"schema":1,"type":"host_result","time":"2026-11-29T04:00:00Z","run_id":"2026-11-29T04-00-00Z","play":"p","step":"s","module":"m","host":"h","status":"fine"}`,
		`{"schema":1,"type":"recap","time":"2026-11-29T04:00:00Z","run_id":"2026-11-29T04-00-00Z","recap":{"run_id":"2026-11-29T04-00-00Z","hosts":[{"host":"h"}],"duration_ns":1,"check":false}}`,
	} {
		_, errs := c.line(t, []byte(bad))
		require.NotEmpty(t, errs, "the schema accepts %s", bad)
	}
}

// TestJSONOutputMatchesSchema runs a real play on the control machine and
// an unreachable host with --output json and checks every line against
// docs/events.schema.json.
func TestJSONOutputMatchesSchema(t *testing.T) {
	c := loadEventSchema(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens: connection refused
	dir := t.TempDir()
	inv := writeFile(t, dir, "inv.hcl", fmt.Sprintf(`host "me" {
  local       = true
  backup_root = %q
}
host "gone" {
  address         = "127.0.0.1"
  port            = %d
  user            = "nobody"
  connect_timeout = "5s"
}
`, filepath.Join(dir, "backups"), closed))
	pb := writeFile(t, dir, "pb.hcl", fmt.Sprintf(`play "p" {
  hosts = "all"
  step "conf" {
    module  = "copy"
    dest    = "%[1]s/conf-${host.name}"
    content = "hello\n"
    timeout = "1m"
  }
  step "look" {
    module   = "shell"
    cmd      = "echo hi"
    changed  = false
    register = "look"
  }
  step "never" {
    module = "shell"
    cmd    = "true"
    when   = false
  }
  step "fails" {
    module        = "shell"
    cmd           = "exit 3"
    ignore_errors = true
  }
}
`, dir))
	stdout, stderr, code := iklim(t, nil, "play", pb, "-i", inv, "--output", "json", "--diff", "-v")
	require.Equal(t, exitUnreachable, code, stderr)
	seen := map[string]bool{}
	statuses := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	n := 0
	for sc.Scan() {
		n++
		v, errs := c.line(t, sc.Bytes())
		require.Empty(t, errs, "line %d: %s", n, sc.Text())
		seen[v["type"].(string)] = true
		if s, ok := v["status"].(string); ok {
			statuses[s] = true
		}
	}
	for _, typ := range []string{"run_start", "play_start", "step_start", "host_result", "recap"} {
		require.True(t, seen[typ], "no %s event in:\n%s", typ, stdout)
	}
	for _, s := range []string{"ok", "changed", "failed", "skipped", "unreachable"} {
		require.True(t, statuses[s], "no %s result in:\n%s", s, stdout)
	}
	// A warning goes through the same printer; no play provokes one on
	// demand, so this one is made here.
	var buf bytes.Buffer
	(&printer.JSON{W: &buf}).Event(runner.Event{Type: runner.EventWarning, Time: time.Now().UTC(),
		RunID: "2026-11-29T04-00-00Z", Host: "me", Error: "finish backup record: disk full"})
	_, errs := c.line(t, buf.Bytes())
	require.Empty(t, errs, buf.String())
}

// TestWaitSaysWhatItWaitsFor runs a wait_for step over SSH (a real sshd)
// on a port that starts listening about 3 s later, with --output json:
// the run carries a step_status event that names the address, valid by
// the schema and before the step's result, and the step ends ok.
func TestWaitSaysWhatItWaitsFor(t *testing.T) {
	c := loadEventSchema(t)
	srv := sshtest.Start(t)
	inv := srv.WriteInventory(t, 1)

	// A port bound now, so no one else takes it, and listening later: until
	// then a connection to it is refused.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	port := sa.(*syscall.SockaddrInet4).Port
	var mu sync.Mutex
	closed := false
	timer := time.AfterFunc(3*time.Second, func() {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			_ = syscall.Listen(fd, 16)
		}
	})
	t.Cleanup(func() {
		timer.Stop()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		_ = syscall.Close(fd)
	})

	pb := writeFile(t, t.TempDir(), "pb.hcl", fmt.Sprintf(`play "p" {
  hosts = "all"
  step "redis up" {
    module   = "wait_for"
    host     = "127.0.0.1"
    port     = %d
    max_wait = "60s"
  }
}
`, port))
	stdout, stderr, code := iklim(t, nil, "play", pb, "-i", inv, "--output", "json")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	var statuses []map[string]any
	var result map[string]any
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		v, errs := c.line(t, sc.Bytes())
		require.Empty(t, errs, sc.Text())
		switch v["type"] {
		case "step_status":
			require.Nil(t, result, "a status after the step's result: %s", stdout)
			statuses = append(statuses, v)
		case "host_result":
			result = v
		}
	}
	require.NotEmpty(t, statuses, "no step_status event in:\n%s", stdout)
	st := statuses[0]
	require.Equal(t, "redis up", st["step"])
	require.Equal(t, "wait_for", st["module"])
	require.Equal(t, "h001", st["host"])
	require.Equal(t, fmt.Sprintf("waiting for port %d on 127.0.0.1", port), st["summary"])
	require.Equal(t, map[string]any{"max_wait": "1m0s"}, st["extra"])
	require.NotNil(t, result)
	require.Equal(t, "ok", result["status"], stdout)
}
