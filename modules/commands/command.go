package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// commandInfo is the command module's registry entry.
func commandInfo() modules.Info {
	return modules.Info{
		Name: "command",
		Doc:  "Run a program with arguments, without a shell (argv or cmd split like a shell would, without expansion)",
		Example: `step "uptime" {
  module   = "command"
  argv     = ["uptime", "-p"]
  changed  = false
  register = "up"
}`,
		Outputs: []modules.Output{
			{Name: "stdout", Type: "string", Doc: "what the command printed (redacted)"},
			{Name: "stderr", Type: "string", Doc: "its standard error (redacted)"},
			{Name: "rc", Type: "number", Doc: "its exit status"},
			{Name: "stdout_lines", Type: "list(string)", Doc: "stdout split into lines"},
			{Name: "skipped", Type: "bool", Doc: "whether creates/removes skipped it"},
		},
		New: func() modules.Module { return &Command{} },
	}
}

// Command runs a program on the host without a shell: no pipes, redirection
// or variable expansion. Like Ansible's command module it reports a change
// every time, unless creates/removes say the work is done or changed = false
// declares it read-only.
type Command struct {
	modules.RunSecrets // sensitive_output joins them

	Argv    []string          `hcl:"argv,optional" doc:"program and arguments, passed as they are (set argv or cmd)"`
	Cmd     string            `hcl:"cmd,optional" doc:"program and arguments in one string, split into words like sh does (quotes and backslashes) but without any expansion (set argv or cmd)"`
	Chdir   string            `hcl:"chdir,optional" doc:"directory to run in"`
	Env     map[string]string `hcl:"env,optional" doc:"environment variables for the command"`
	Creates string            `hcl:"creates,optional" doc:"skip the command when this remote path exists"`
	Removes string            `hcl:"removes,optional" doc:"skip the command unless this remote path exists"`
	Changed *bool             `hcl:"changed,optional" doc:"false declares the command read-only: it then runs during check (also in check mode), the step reports ok and its output can be registered; default true"`
	Stdin   string            `hcl:"stdin,optional" doc:"text fed to the command's standard input"`
	Secret  bool              `hcl:"sensitive_output,optional" doc:"the output is secret (a fetched secrets file): stdout, each line and each KEY=VALUE value join the run's secrets, so they are redacted everywhere and files written from them are sealed"`

	exec execStep
}

// Validate implements Validator.
func (m *Command) Validate() error {
	switch {
	case len(m.Argv) > 0 && m.Cmd != "":
		return errors.New("command: set argv or cmd, not both")
	case len(m.Argv) == 0 && strings.TrimSpace(m.Cmd) == "":
		return errors.New("command: argv or cmd is required")
	case len(m.Argv) > 0 && m.Argv[0] == "":
		return modules.ArgErrorf("argv", "command: argv[0] (the program) is empty")
	}
	if _, err := m.argv(); err != nil {
		return modules.ArgErrorf("cmd", "command: %w", err)
	}
	e := m.newExec()
	return e.validate("command")
}

func (m *Command) argv() ([]string, error) {
	if len(m.Argv) > 0 {
		return m.Argv, nil
	}
	return splitArgs(m.Cmd)
}

func (m *Command) newExec() execStep {
	argv, _ := m.argv()
	return execStep{
		body: "exec " + remote.Join(argv), label: remote.Join(argv),
		chdir: m.Chdir, env: m.Env, creates: m.Creates, removes: m.Removes,
		changed: m.Changed == nil || *m.Changed, stdin: m.Stdin, secret: m.Secret, secrets: m.Secrets(),
	}
}

// Check implements Module.
func (m *Command) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if _, err := m.argv(); err != nil {
		return nil, fmt.Errorf("command: %w", err)
	}
	m.exec = m.newExec()
	return m.exec.check(ctx, c)
}

// Apply implements Module.
func (m *Command) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	return m.exec.apply(ctx, c)
}

// Output implements Outputter: stdout, stderr, rc and stdout_lines.
func (m *Command) Output() map[string]any { return m.exec.output() }

// execStep is what command and shell share: guards, the changed = false
// mode, running and the output.
type execStep struct {
	body             string // the sh script that does the work
	label            string // for summaries and errors
	chdir            string
	env              map[string]string
	creates, removes string
	changed          bool
	stdin            string
	secret           bool // sensitive_output: the output joins the run's secrets
	secrets          *modules.Secrets

	res     modules.Result
	skipped bool
}

func (e *execStep) validate(module string) error {
	for k := range e.env {
		if !remote.IsEnvName(k) {
			return modules.ArgErrorf("env", "%s: env name %q is not a valid variable name", module, k)
		}
	}
	if e.creates != "" && e.removes != "" {
		return fmt.Errorf("%s: set creates or removes, not both", module)
	}
	return nil
}

// skipTest is a sh condition that is true when a guard says the work is done.
func (e *execStep) skipTest() string {
	switch {
	case e.creates != "":
		return "[ -e " + remote.Quote(e.creates) + " ]"
	case e.removes != "":
		return "[ ! -e " + remote.Quote(e.removes) + " ]"
	}
	return ""
}

// script is the whole command: cd, then the body.
func (e *execStep) script() string {
	if e.chdir == "" {
		return e.body
	}
	return "cd -- " + remote.Quote(e.chdir) + " || exit 1\n" + e.body
}

// ranMarker starts stdout when a guarded read-only command ran.
const ranMarker = "iklim:ran\n"

func (e *execStep) check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	test := e.skipTest()
	if e.changed {
		if test == "" {
			return modules.Changef("run %s", remote.Short(e.label)), nil // no round trip at all
		}
		res, err := c.Run(ctx, "if "+test+"; then echo skip; fi")
		if err != nil {
			return nil, fmt.Errorf("check guard of %s: %w", remote.Short(e.label), err)
		}
		if err := res.Err("check guard of " + remote.Short(e.label)); err != nil {
			return nil, err
		}
		if strings.TrimSpace(res.Stdout) == "skip" {
			e.skipped = true
			return nil, nil
		}
		return modules.Changef("run %s", remote.Short(e.label)), nil
	}
	// Read-only: run it now, in one round trip with the guard.
	script := e.script()
	if test != "" {
		script = "if " + test + "; then exit 0; fi\nprintf '" + strings.TrimSuffix(ranMarker, "\n") + "\\n'\n" + script
	}
	if err := e.run(ctx, c, script); err != nil {
		return nil, err
	}
	if test != "" {
		out, ran := strings.CutPrefix(e.res.Stdout, ranMarker)
		e.res.Stdout, e.skipped = out, !ran
	}
	return nil, nil
}

func (e *execStep) apply(ctx context.Context, c modules.Conn) error {
	return e.run(ctx, c, e.script())
}

func (e *execStep) run(ctx context.Context, c modules.Conn, script string) error {
	var opts []modules.RunOption
	if len(e.env) > 0 {
		opts = append(opts, modules.WithEnv(e.env))
	}
	if e.stdin != "" {
		opts = append(opts, modules.WithStdin(strings.NewReader(e.stdin)))
	}
	res, err := c.Run(ctx, script, opts...)
	e.res = res
	if e.secret {
		markOutput(e.secrets, res.Stdout)
	}
	if err != nil {
		return fmt.Errorf("run %s: %w", remote.Short(e.label), err)
	}
	return res.Err("run " + remote.Short(e.label))
}

func (e *execStep) output() map[string]any {
	lines := strings.Split(strings.TrimRight(e.res.Stdout, "\n"), "\n")
	if e.res.Stdout == "" {
		lines = []string{}
	}
	return map[string]any{
		"stdout":       e.res.Stdout,
		"stderr":       e.res.Stderr,
		"rc":           e.res.ExitCode,
		"stdout_lines": lines,
		"skipped":      e.skipped,
	}
}

// markOutput adds a secret output to the run's secrets: whole, each line,
// and each line's value after "=" (env files), so that no part of it is
// shown and content built from it counts as sensitive.
func markOutput(secrets *modules.Secrets, out string) {
	vals := []string{out}
	for _, l := range strings.Split(out, "\n") {
		vals = append(vals, l)
		if _, v, ok := strings.Cut(l, "="); ok {
			vals = append(vals, strings.Trim(v, `"'`))
		}
	}
	secrets.Add(vals...)
}

// splitArgs splits s into words the way sh does for quoting — blanks
// separate, '…' is literal, "…" honours \" \\ \$ \` — but expands nothing.
func splitArgs(s string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case ch == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case ch == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`\n", s[i+1]) >= 0 {
					i++
					if s[i] == '\n' {
						continue // line continuation
					}
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord = true
		case ch == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("trailing \\ in %q", s)
			}
			i++
			if s[i] == '\n' {
				continue // line continuation
			}
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("cmd %q holds no program", s)
	}
	return words, nil
}

// CheckAhead implements CheckAheader: with changed = false, Check runs the
// command itself, which must run in its turn and once; otherwise Check only
// tests creates/removes.
func (m *Command) CheckAhead() modules.CheckAhead { return execCheckAhead(m.Changed) }

func execCheckAhead(changed *bool) modules.CheckAhead {
	if changed != nil && !*changed {
		return modules.CheckAheadLead
	}
	return modules.CheckAheadReadOnly
}
