package backup

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
)

// HostRecords is one run as one machine recorded it, as stored: change
// records are the redacted ones and sealed parts stay sealed, so they can
// be shown (iklim report, iklim backups show) without the backup key.
type HostRecords struct {
	Host string `json:"host"`
	// Control: the records are the host's delegated changes, kept on the
	// control machine.
	Control bool       `json:"control,omitempty"`
	Dir     string     `json:"dir"`
	Run     *RunRecord `json:"run,omitempty"`
	Changes []Recorded `json:"changes"`
}

// Recorded is one change record with how it ended.
type Recorded struct {
	runner.ChangeRecord
	After *AfterRecord `json:"after,omitempty"`
	// Sealed: the full record is sealed; this one is redacted.
	Sealed bool `json:"sealed,omitempty"`
	// Files are the before-states of the snapshotted paths.
	Snapshots []FileMeta `json:"snapshots,omitempty"`
}

// ReadHostRecords reads run id's records of host under root through c, the
// way rollback reads them. It returns nil when host recorded nothing.
func ReadHostRecords(ctx context.Context, c modules.Conn, root, host, id string) (*HostRecords, error) {
	if !ValidRunID(id) {
		return nil, fmt.Errorf("%q is not a run id", id)
	}
	s, err := readRun(ctx, c, root, host, id)
	if err != nil || s == nil {
		return nil, err
	}
	hr := &HostRecords{Host: host, Dir: s.dir, Run: s.run}
	for _, e := range s.entries {
		r := Recorded{ChangeRecord: e.rec, After: e.after, Sealed: len(e.sealed) > 0}
		for n := 1; n <= len(e.rec.Change.Files); n++ {
			if m := e.metas[n]; m != nil {
				r.Snapshots = append(r.Snapshots, *m)
			}
		}
		hr.Changes = append(hr.Changes, r)
	}
	return hr, nil
}

// ReadRunRecords reads run id's records on every host (in parallel,
// through connector) and the hosts' delegated records on control (unless
// nil). Hosts without records are left out; hosts that cannot be read are
// named in the error and the others are still returned.
func ReadRunRecords(ctx context.Context, connector runner.Connector, hosts []*inventories.Host, control *inventories.Host, id string) ([]HostRecords, error) {
	res := make([]*HostRecords, len(hosts))
	errs := make([]error, len(hosts)+1)
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			var c modules.Conn
			var err error
			if h.Local {
				c = transport.NewLocalConn(h.Name)
			} else if c, err = connector.Connect(ctx, h); err != nil {
				errs[i] = fmt.Errorf("%s: %w", h.Name, err)
				return
			}
			hr, err := ReadHostRecords(ctx, c, hostRoot(h), h.Name, id)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", h.Name, err)
				return
			}
			if hr != nil {
				hr.Changes = keepRecords(hr.Changes, func(r *Recorded) bool { return !r.Delegated && r.Host == h.Name })
			}
			res[i] = hr
		})
	}
	wg.Wait()
	var out []HostRecords
	for _, hr := range res {
		if hr != nil {
			out = append(out, *hr)
		}
	}
	if control != nil {
		cr, err := ReadHostRecords(ctx, transport.NewLocalConn(control.Name), hostRoot(control), control.Name, id)
		if err != nil {
			errs[len(hosts)] = fmt.Errorf("control machine: %w", err)
		}
		if cr != nil {
			byHost := map[string][]Recorded{}
			var order []string
			for _, r := range cr.Changes {
				if !r.Delegated {
					continue
				}
				if _, ok := byHost[r.Host]; !ok {
					order = append(order, r.Host)
				}
				byHost[r.Host] = append(byHost[r.Host], r)
			}
			for _, h := range order {
				out = append(out, HostRecords{Host: h, Control: true, Dir: cr.Dir, Run: cr.Run, Changes: byHost[h]})
			}
		}
	}
	return out, errors.Join(errs...)
}

func keepRecords(rs []Recorded, keep func(*Recorded) bool) []Recorded {
	out := rs[:0]
	for i := range rs {
		if keep(&rs[i]) {
			out = append(out, rs[i])
		}
	}
	return out
}
