// Package modules holds iklim's module contract — Conn, Module, Change and
// the optional interfaces — and the registry. The modules themselves live in
// family packages (modules/files, modules/commands, modules/docker, …) that
// build on modules/remote. A module is a Go struct whose `hcl` tags are its
// schema: the playbook decodes a step's arguments straight into it.
package modules

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"time"
)

// Conn runs commands and moves files on one host: an SSH connection or the
// control machine itself.
type Conn interface {
	// Host is the inventory name of the host this Conn reaches.
	Host() string
	// Run runs cmd with /bin/sh on the host. A non-zero exit status is not an
	// error: it is reported in Result.ExitCode. Errors mean the command could
	// not be run or its outcome is unknown (connection lost, context ended).
	Run(ctx context.Context, cmd string, opts ...RunOption) (Result, error)
	// Upload writes r to path atomically (temp file + rename) with mode.
	Upload(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error
	// Download copies the file at path into w.
	Download(ctx context.Context, path string, w io.Writer) error
}

// Result is what a command printed and how it ended.
type Result struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"rc"`
}

// OK reports whether the command exited with status 0.
func (r Result) OK() bool { return r.ExitCode == 0 }

// Err turns a non-zero exit into an error that carries the command's stderr.
func (r Result) Err(what string) error {
	if r.OK() {
		return nil
	}
	msg := r.Stderr
	if msg == "" {
		msg = r.Stdout
	}
	return fmt.Errorf("%s: exit %d: %s", what, r.ExitCode, trimOutput(msg))
}

// RunOptions are the per-command settings a RunOption changes.
type RunOptions struct {
	Stdin io.Reader
	Env   map[string]string // passed inline (VAR=value cmd), never via Setenv
	// NoBecome runs the command as the login user even when the host uses
	// sudo; for commands that must not be privileged.
	NoBecome bool
}

// RunOption changes how one command runs.
type RunOption func(*RunOptions)

// WithStdin feeds r to the command's standard input.
func WithStdin(r io.Reader) RunOption { return func(o *RunOptions) { o.Stdin = r } }

// WithEnv sets environment variables for the command.
func WithEnv(env map[string]string) RunOption { return func(o *RunOptions) { o.Env = env } }

// ApplyRunOptions folds opts into one RunOptions; for Conn implementations.
func ApplyRunOptions(opts []RunOption) RunOptions {
	var o RunOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Module checks a host, says what it would change, and applies that change.
// A fresh Module value is decoded for each host and step, so a module may keep
// what Check learnt for Apply and Output.
type Module interface {
	// Check reads the host and returns the change it would make, or nil when
	// the host is already as wanted. Check must not change the host.
	Check(ctx context.Context, c Conn) (*Change, error)
	// Apply makes the change Check returned.
	Apply(ctx context.Context, c Conn, ch *Change) error
}

// Rollbacker is a module that can undo a change from what the Change recorded.
// Files listed in Change.Files are restored by the runner; Rollback undoes the
// rest (cluster state, labels, services).
type Rollbacker interface {
	Rollback(ctx context.Context, c Conn, ch *Change) error
}

// Outputter is a module whose result a step can register. Output is called
// after Check (no change) or after Apply.
type Outputter interface {
	Output() map[string]any
}

// Validator is a module that checks its own arguments before any host is
// touched (combinations the schema alone cannot express).
type Validator interface {
	Validate() error
}

// ArgError is a Validate error bound to one argument, so the diagnostic
// points at that attribute's file:line:col instead of the step header.
type ArgError struct {
	Arg string // the argument's HCL name, e.g. "dest"
	Err error
}

func (e *ArgError) Error() string { return e.Arg + ": " + e.Err.Error() }
func (e *ArgError) Unwrap() error { return e.Err }

// ArgErrorf is a shorthand for an ArgError with a formatted message.
func ArgErrorf(arg, format string, args ...any) error {
	return &ArgError{Arg: arg, Err: fmt.Errorf(format, args...)}
}

// HostNamer is a module whose arguments name inventory hosts (swarm
// managers, a node_label manager). The compiler checks every name against
// the inventory before any host is touched.
type HostNamer interface {
	// HostArgs maps an argument's HCL name to the host names it holds.
	HostArgs() map[string][]string
}

// Change is what a module did or would do.
type Change struct {
	// Summary is one line for humans: "create /etc/app.conf (0644)".
	Summary string `json:"summary"`
	// Before is the module's own record of the state it replaces, enough for
	// Rollback. Set it with SetBefore, read it with DecodeBefore.
	Before json.RawMessage `json:"before,omitempty"`
	// Files are remote paths the change will create, replace or delete. The
	// runner snapshots them (content, mode, owner, or absence) before Apply.
	Files []string `json:"files,omitempty"`
	// Sensitive says the change writes a secret: the recorder seals the
	// snapshots of Files instead of storing them in clear text.
	Sensitive bool `json:"sensitive,omitempty"`
	// Diff is the before/after text shown in diff mode.
	Diff *Diff `json:"-"`
}

// Diff is a before/after pair for diff mode.
type Diff struct {
	Label  string // usually the path
	Before string
	After  string
}

// SetBefore records v as the state to undo to.
func (c *Change) SetBefore(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("record before-state: %w", err)
	}
	c.Before = b
	return nil
}

// DecodeBefore reads the state recorded by SetBefore into v.
func (c *Change) DecodeBefore(v any) error {
	if len(c.Before) == 0 {
		return fmt.Errorf("change %q recorded no before-state", c.Summary)
	}
	return json.Unmarshal(c.Before, v)
}

// Changef is a shorthand for a Change with a formatted summary.
func Changef(format string, args ...any) *Change {
	return &Change{Summary: fmt.Sprintf(format, args...)}
}

func trimOutput(s string) string {
	const max = 2000
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// Dialer is a Conn that can open a network connection from the host's side:
// over SSH a direct-tcpip channel (the connection is a tunnel, nothing is
// installed on the host), locally a plain dial. cert_reload's verify uses it
// to do a TLS handshake to what the host serves on its loopback.
type Dialer interface {
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
}

// Status is what a running step waits for, as its module reports it with
// ReportStatus while it polls: "iklimco_redis 2/3 replicas".
type Status struct {
	Text string
	// Since is when the wait began and Max its bound, so a display can
	// show "42s of 7m0s"; Max 0 means the step's own deadline.
	Since time.Time
	Max   time.Duration
}

// Reporter is a Conn that shows a running step's Status: the runner hands
// every module a Conn that is one, so a long wait says what it waits for.
type Reporter interface {
	Report(Status)
}

// ReportStatus reports st through c when c is a Reporter and does nothing
// otherwise (a program's own Conn, a batch of checks).
func ReportStatus(c Conn, st Status) {
	if r, ok := c.(Reporter); ok {
		r.Report(st)
	}
}
