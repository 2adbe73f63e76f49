package docker

// The read-only queries of the checks go to the Docker Engine API when they
// can: over SSH a direct-streamlocal channel to the host's
// /var/run/docker.sock (ssh -L's unix-socket twin), so a query starts no
// process on the host at all, where the CLI costs a session, sudo and a
// `docker` start-up each. Where the socket cannot be reached (the Conn is
// no modules.Dialer, sshd forbids streamlocal forwarding, the login user
// may not open the socket, dockerd listens elsewhere) the caller runs the
// CLI as before. Changes always go through the CLI.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/iklimco/iklim/modules"
)

// engineSocket is where dockerd listens on a host (its default).
const engineSocket = "/var/run/docker.sock"

// maxEngineBody bounds one answer of the engine API.
const maxEngineBody = 64 << 20

// errNoEngine says the engine API could not be reached on the host; the
// caller falls back to the CLI.
var errNoEngine = errors.New("docker engine API not reachable")

// engineError is an answer of the engine API other than 2xx.
type engineError struct {
	Status  int
	Message string
}

func (e *engineError) Error() string {
	return fmt.Sprintf("docker engine API: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// engineStatus is the status of an engineError, 0 for other errors.
func engineStatus(err error) int {
	var ee *engineError
	if errors.As(err, &ee) {
		return ee.Status
	}
	return 0
}

// engineGet GETs path (with query) from the host's dockerd and decodes the
// JSON answer into v. It returns errNoEngine (wrapped) when the socket
// cannot be reached or the exchange breaks off, an *engineError for an
// answer other than 2xx.
func engineGet(ctx context.Context, c modules.Conn, path string, query url.Values, v any) error {
	d, ok := c.(modules.Dialer)
	if !ok {
		return errNoEngine
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.Dial(ctx, "unix", engineSocket)
		},
		DisableKeepAlives:  true, // one request per channel: nothing to close later
		DisableCompression: true,
	}
	u := url.URL{Scheme: "http", Host: "docker", Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%s: engine API %s: %w", c.Host(), path, err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: engine API %s: %w", c.Host(), path, ctx.Err())
		}
		return fmt.Errorf("%s: %w: %w", c.Host(), errNoEngine, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxEngineBody))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: engine API %s: %w", c.Host(), path, ctx.Err())
		}
		return fmt.Errorf("%s: %w: read %s: %w", c.Host(), errNoEngine, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var msg struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &msg) != nil || msg.Message == "" {
			// Not dockerd's error shape: something else answers there.
			return fmt.Errorf("%s: %w: %s answered %d %q", c.Host(), errNoEngine, path, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return &engineError{Status: resp.StatusCode, Message: msg.Message}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: %w: read %s: %w", c.Host(), errNoEngine, path, err)
	}
	return nil
}

// filtersQuery is the `filters` query parameter of the list endpoints.
func filtersQuery(filters map[string][]string, extra ...string) url.Values {
	q := url.Values{}
	if len(filters) > 0 {
		b, _ := json.Marshal(filters)
		q.Set("filters", string(b))
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q
}

// apiInfo is the part of GET /info that swarmInfo needs.
type apiInfo struct {
	Swarm struct {
		NodeID           string          `json:"NodeID"`
		NodeAddr         string          `json:"NodeAddr"`
		LocalNodeState   string          `json:"LocalNodeState"`
		ControlAvailable bool            `json:"ControlAvailable"`
		Error            string          `json:"Error"`
		RemoteManagers   []remoteManager `json:"RemoteManagers"`
		Cluster          *struct {
			ID string `json:"ID"`
		} `json:"Cluster"`
	} `json:"Swarm"`
}

// engineSwarmInfo is probeSwarm through the engine API.
func engineSwarmInfo(ctx context.Context, c modules.Conn) (swarmInfo, error) {
	var ai apiInfo
	if err := engineGet(ctx, c, "/info", nil, &ai); err != nil {
		return swarmInfo{}, err
	}
	s := ai.Swarm
	si := swarmInfo{State: s.LocalNodeState, NodeID: s.NodeID, NodeAddr: s.NodeAddr, Control: s.ControlAvailable,
		Error: s.Error, Managers: s.RemoteManagers}
	if s.Cluster != nil {
		si.ClusterID = s.Cluster.ID
	}
	return si, nil
}

// apiNode is the part of GET /nodes/{id} the modules read.
type apiNode struct {
	ID   string `json:"ID"`
	Spec struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Spec"`
}

// engineNode reads node id through manager c; found is false for a node
// the manager does not know.
func engineNode(ctx context.Context, c modules.Conn, id string) (n apiNode, found bool, err error) {
	err = engineGet(ctx, c, "/nodes/"+url.PathEscape(id), nil, &n)
	if engineStatus(err) == http.StatusNotFound {
		return n, false, nil
	}
	return n, err == nil, err
}

// engineServiceNames lists the names of the services the filters select.
func engineServiceNames(ctx context.Context, c modules.Conn, filters map[string][]string) ([]string, error) {
	var svcs []struct {
		Spec struct {
			Name string `json:"Name"`
		} `json:"Spec"`
	}
	if err := engineGet(ctx, c, "/services", filtersQuery(filters), &svcs); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(svcs))
	for _, s := range svcs {
		names = append(names, s.Spec.Name)
	}
	return names, nil
}

// engineServiceStates is what probeServices learns, but without the tasks:
// replicas from the service status (as `docker service ls` prints them)
// and the update status. ok is false when the daemon gave no service
// status (API before 1.41): the caller then asks the CLI.
func engineServiceStates(ctx context.Context, c modules.Conn, names []string) (states map[string]*serviceState, ok bool, err error) {
	var svcs []struct {
		Spec struct {
			Name string `json:"Name"`
		} `json:"Spec"`
		UpdateStatus  *updateStatus `json:"UpdateStatus"`
		ServiceStatus *struct {
			RunningTasks uint64 `json:"RunningTasks"`
			DesiredTasks uint64 `json:"DesiredTasks"`
		} `json:"ServiceStatus"`
	}
	if err := engineGet(ctx, c, "/services", filtersQuery(map[string][]string{"name": names}, "status", "true"), &svcs); err != nil {
		return nil, false, err
	}
	states = map[string]*serviceState{}
	for _, s := range svcs {
		if s.ServiceStatus == nil {
			return nil, false, nil
		}
		st := &serviceState{Name: s.Spec.Name, Running: int(s.ServiceStatus.RunningTasks), Desired: int(s.ServiceStatus.DesiredTasks)}
		s.UpdateStatus.applyTo(st)
		states[st.Name] = st
	}
	return states, true, nil
}
