// Package cluster is the family of modules that form and verify clustered
// services running in swarm tasks (or on the host): rabbit_join makes
// RabbitMQ nodes one cluster, sentinel_check verifies a Redis Sentinel set.
// Like an operator, they reach a service on its node with `docker exec`
// into the task's container; secrets travel through the environment or
// stdin, never argv.
package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// Modules lists the family's modules for a registry.
func Modules() []modules.Info {
	return []modules.Info{rabbitJoinInfo(), sentinelCheckInfo()}
}

// target says where a service runs on a host: in the running task of a
// swarm service, in a named container, or on the host itself.
type target struct {
	Service   string
	Container string
}

// prelude is the shell that defines `rq CMD...`, which runs CMD where the
// service runs. Exit 97 means the service has no running container here.
func (t target) prelude() string {
	switch {
	case t.Service != "":
		q := remote.Quote(t.Service)
		return `ctr=$(docker ps -q --filter label=com.docker.swarm.service.name=` + q + ` --filter status=running | head -n 1)
[ -n "$ctr" ] || { echo "no running task of service "` + q + `" on $(hostname)" >&2; exit 97; }
rq() { docker exec "$ctr" "$@"; }
`
	case t.Container != "":
		q := remote.Quote(t.Container)
		return `ctr=` + q + `
[ "$(docker inspect -f '{{.State.Running}}' "$ctr" 2>/dev/null)" = true ] || { echo "container "` + q + `" is not running on $(hostname)" >&2; exit 97; }
rq() { docker exec "$ctr" "$@"; }
`
	default:
		return "rq() { \"$@\"; }\n"
	}
}

func (t target) String() string {
	switch {
	case t.Service != "":
		return "the task of service " + t.Service
	case t.Container != "":
		return "container " + t.Container
	}
	return "the host"
}

// sections splits output made of "@@name" marker lines into named parts.
func sections(out string) map[string]string {
	m := map[string]string{}
	name := ""
	var b strings.Builder
	flush := func() {
		if name != "" {
			m[name] = strings.TrimRight(b.String(), "\n")
		}
		b.Reset()
	}
	for _, line := range strings.SplitAfter(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "@@"); ok {
			flush()
			name = rest
			continue
		}
		b.WriteString(line)
	}
	flush()
	return m
}

// peerConn reaches host name: c itself, or through the step's Peers p.
func peerConn(ctx context.Context, p modules.Peers, c modules.Conn, name string) (modules.Conn, error) {
	if name == "" || name == c.Host() {
		return c, nil
	}
	if p != nil {
		if p.Self().Name == name {
			return c, nil
		}
		pc, err := p.Conn(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("reach %s: %w", name, err)
		}
		return pc, nil
	}
	return nil, fmt.Errorf("%s must reach %s but the step has no peers", c.Host(), name)
}

// selfName is the inventory name of the host the module runs for.
func selfName(p modules.Peers, c modules.Conn) string {
	if p != nil {
		return p.Self().Name
	}
	return c.Host()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// duration parses a duration argument (default def) as an ArgError.
func duration(arg, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, modules.ArgErrorf(arg, "want a positive duration like 90s, got %q", s)
	}
	return d, nil
}
