package commands

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// waitForInfo is the wait_for module's registry entry.
func waitForInfo() modules.Info {
	return modules.Info{
		Name: "wait_for",
		Doc:  "Wait on the host until a port opens, a path appears or a command succeeds (never changes anything)",
		Example: `step "app port" {
  module   = "wait_for"
  port     = 8080
  max_wait = "30s"
}`,
		Outputs: []modules.Output{
			{Name: "elapsed", Type: "number", Doc: "seconds waited"},
		},
		ReadOnly: true,
		New:      func() modules.Module { return &WaitFor{} },
	}
}

// WaitFor waits until a condition holds on the host. It never changes
// anything: Check does the waiting, in one remote command that polls in a
// sh loop (no round trip per poll), and returns nil or a timeout error.
// Cancelling ctx stops the remote loop through the Conn.
type WaitFor struct {
	Port     int    `hcl:"port,optional" doc:"TCP port to wait for, probed from the host itself (nc -z, else bash /dev/tcp)"`
	Host     string `hcl:"host,optional" doc:"address the port is probed on; default 127.0.0.1"`
	Path     string `hcl:"path,optional" doc:"remote path to wait for"`
	Cmd      string `hcl:"cmd,optional" doc:"sh command line to wait for: until it exits 0"`
	State    string `hcl:"state,optional" doc:"present (default): the port accepts connections, the path exists; absent: the port refuses them, the path is gone"`
	MaxWait  string `hcl:"max_wait,optional" doc:"how long to wait, a Go duration; default \"60s\" (the step meta-argument timeout bounds the whole step)"`
	Interval string `hcl:"interval,optional" doc:"pause between probes, a Go duration; default \"1s\""`

	elapsed time.Duration
}

var hostArg = regexp.MustCompile(`^[A-Za-z0-9._:-]+$`)

// timeoutExit is the loop's exit status on timeout (as timeout(1)'s).
const timeoutExit = 124

func (m *WaitFor) durations() (timeout, interval time.Duration, err error) {
	if timeout, err = remote.ParseDuration("max_wait", m.MaxWait, time.Minute); err != nil {
		return 0, 0, modules.ArgErrorf("max_wait", "wait_for: %w", err)
	}
	if interval, err = remote.ParseDuration("interval", m.Interval, time.Second); err != nil {
		return 0, 0, modules.ArgErrorf("interval", "wait_for: %w", err)
	}
	return timeout, interval, nil
}

func (m *WaitFor) host() string {
	if m.Host == "" {
		return "127.0.0.1"
	}
	return m.Host
}

// Validate implements Validator.
func (m *WaitFor) Validate() error {
	n := 0
	for _, set := range []bool{m.Port != 0, m.Path != "", m.Cmd != ""} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		return errors.New("wait_for: set exactly one of port, path or cmd")
	case m.Port != 0 && (m.Port < 1 || m.Port > 65535):
		return modules.ArgErrorf("port", "wait_for: port %d is out of range", m.Port)
	case m.Host != "" && m.Port == 0:
		return modules.ArgErrorf("host", "wait_for: host is only for port")
	case m.Host != "" && !hostArg.MatchString(m.Host):
		return modules.ArgErrorf("host", "wait_for: host %q is not a host name or address", m.Host)
	case m.State != "" && m.State != "present" && m.State != "absent":
		return modules.ArgErrorf("state", "wait_for: state %q is not present or absent", m.State)
	case m.State == "absent" && m.Cmd != "":
		return modules.ArgErrorf("state", "wait_for: state is not for cmd")
	}
	if m.Path != "" {
		if err := remote.AbsPath("path", m.Path); err != nil {
			return modules.ArgErrorf("path", "wait_for: %w", err)
		}
	}
	_, _, err := m.durations()
	return err
}

// probe is the sh condition polled, and what it waits for, for messages.
func (m *WaitFor) probe() (cond, what string) {
	absent := m.State == "absent"
	switch {
	case m.Port != 0:
		h, p := m.host(), strconv.Itoa(m.Port)
		cond = "_probe"
		what = "port " + p + " on " + h
		if absent {
			cond, what = "! _probe", what+" to close"
		}
	case m.Path != "":
		cond, what = "[ -e "+remote.Quote(m.Path)+" ]", m.Path
		if absent {
			cond, what = "[ ! -e "+remote.Quote(m.Path)+" ]", m.Path+" to be removed"
		}
	default:
		cond = "out=$(_cmd)"
		what = "cmd " + strconv.Quote(remote.Short(m.Cmd)) + " to succeed"
	}
	return cond, what
}

// script is the whole wait: one sh loop with the deadline kept on the host.
func (m *WaitFor) script(timeout, interval time.Duration) string {
	cond, _ := m.probe()
	var b strings.Builder
	b.WriteString("_now() { echo $(( $(date +%s%N) / 1000000 )); }\n")
	if m.Port != 0 {
		h, p := m.host(), strconv.Itoa(m.Port)
		fmt.Fprintf(&b, `if command -v nc >/dev/null 2>&1; then _probe() { nc -z -w1 %s %s >/dev/null 2>&1; }
elif command -v bash >/dev/null 2>&1; then _probe() { timeout -k 1 2 bash -c %s >/dev/null 2>&1 </dev/null; }
else echo "neither nc nor bash found to probe a port" >&2; exit 127; fi
`, h, p, remote.Quote("exec 3<>/dev/tcp/"+h+"/"+p))
	}
	if m.Cmd != "" { // each try is cut off at the deadline, at least 1 s
		b.WriteString(`_cmd() { t=$(( (end - $(_now) + 999) / 1000 )); [ "$t" -ge 1 ] || t=1; timeout -k 1 "$t" sh -c ` +
			remote.Quote(m.Cmd) + " 2>&1 </dev/null; }\n")
	}
	fmt.Fprintf(&b, `end=$(( $(_now) + %d )); out=
while :; do
if %s; then exit 0; fi
left=$(( end - $(_now) ))
if [ "$left" -le 0 ]; then [ -z "$out" ] || printf '%%s\n' "$out" >&2; exit %d; fi
[ "$left" -le %d ] || left=%d
sleep $(( left / 1000 )).$(printf %%03d $(( left %% 1000 )))
done
`, timeout.Milliseconds(), cond, timeoutExit, interval.Milliseconds(), interval.Milliseconds())
	return b.String()
}

// Check implements Module: it waits (one round trip) and returns nil, or an
// error on timeout.
func (m *WaitFor) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	timeout, interval, _ := m.durations()
	_, what := m.probe()
	limit := m.MaxWait
	if limit == "" {
		limit = "60s"
	}
	timedOut := fmt.Errorf("wait_for: timed out after %s waiting for %s", limit, what)
	// The host keeps the deadline; this one only guards against a host that
	// stops answering.
	runCtx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	start := time.Now()
	// The loop runs on the host: its status is set once, the display
	// counts the time.
	modules.ReportStatus(c, modules.Status{Text: "waiting for " + what, Since: start, Max: timeout})
	res, err := c.Run(runCtx, m.script(timeout, interval))
	m.elapsed = time.Since(start)
	switch {
	case err != nil && ctx.Err() == nil && runCtx.Err() != nil:
		return nil, timedOut
	case err != nil:
		return nil, fmt.Errorf("wait_for %s: %w", what, err)
	case res.ExitCode == timeoutExit:
		if last := strings.TrimSpace(res.Stderr); last != "" {
			return nil, fmt.Errorf("%w; last output: %s", timedOut, remote.TrimOutput(last))
		}
		return nil, timedOut
	case !res.OK():
		return nil, res.Err("wait_for " + what)
	}
	return nil, nil
}

// Apply implements Module; wait_for never changes anything.
func (m *WaitFor) Apply(context.Context, modules.Conn, *modules.Change) error { return nil }

// Output implements Outputter: elapsed seconds.
func (m *WaitFor) Output() map[string]any {
	return map[string]any{"elapsed": m.elapsed.Seconds()}
}
