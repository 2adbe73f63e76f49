package commands

import (
	"context"
	"strings"

	"github.com/iklimco/iklim/modules"
)

// shellInfo is the shell module's registry entry.
func shellInfo() modules.Info {
	return modules.Info{
		Name: "shell",
		Doc:  "Run a command line with /bin/sh (pipes, redirection, variables)",
		Example: `step "migrate" {
  module  = "shell"
  cmd     = "app migrate >> /var/log/app-migrate.log 2>&1 && touch /srv/app/.migrated"
  creates = "/srv/app/.migrated"
}`,
		Outputs: []modules.Output{
			{Name: "stdout", Type: "string", Doc: "what the command printed (redacted)"},
			{Name: "stderr", Type: "string", Doc: "its standard error (redacted)"},
			{Name: "rc", Type: "number", Doc: "its exit status"},
			{Name: "stdout_lines", Type: "list(string)", Doc: "stdout split into lines"},
			{Name: "skipped", Type: "bool", Doc: "whether creates/removes skipped it"},
		},
		New: func() modules.Module { return &Shell{} },
	}
}

// Shell runs a command line with /bin/sh on the host. Like Ansible's shell
// module it reports a change every time, unless creates/removes say the work
// is done or changed = false declares it read-only.
type Shell struct {
	modules.RunSecrets // sensitive_output joins them

	Cmd     string            `hcl:"cmd" doc:"command line run by /bin/sh"`
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
func (m *Shell) Validate() error {
	if strings.TrimSpace(m.Cmd) == "" {
		return modules.ArgErrorf("cmd", "shell: cmd is empty")
	}
	e := m.newExec()
	return e.validate("shell")
}

func (m *Shell) newExec() execStep {
	return execStep{
		body: m.Cmd, label: m.Cmd,
		chdir: m.Chdir, env: m.Env, creates: m.Creates, removes: m.Removes,
		changed: m.Changed == nil || *m.Changed, stdin: m.Stdin, secret: m.Secret, secrets: m.Secrets(),
	}
}

// Check implements Module.
func (m *Shell) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	m.exec = m.newExec()
	return m.exec.check(ctx, c)
}

// Apply implements Module.
func (m *Shell) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	return m.exec.apply(ctx, c)
}

// Output implements Outputter: stdout, stderr, rc and stdout_lines.
func (m *Shell) Output() map[string]any { return m.exec.output() }

// CheckAhead implements CheckAheader, as Command's.
func (m *Shell) CheckAhead() modules.CheckAhead { return execCheckAhead(m.Changed) }
