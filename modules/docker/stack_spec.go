package docker

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/iklimco/iklim/modules/remote"
)

// The swarm side of stack_deploy: `docker service inspect` parsed, and a
// service spec normalised (Docker's defaults and zero values dropped) so its
// fingerprint only changes when the service does.

// svcInspect is the part of `docker service inspect` the module reads. Spec
// is kept raw too, to fingerprint it.
type svcInspect struct {
	ID      string `json:"ID"`
	Version struct {
		Index uint64 `json:"Index"`
	} `json:"Version"`
	UpdatedAt    string          `json:"UpdatedAt"`
	Spec         swarmSpec       `json:"Spec"`
	RawSpec      json.RawMessage `json:"-"`
	PreviousSpec json.RawMessage `json:"PreviousSpec"`
	UpdateStatus *struct {
		State   string `json:"State"`
		Message string `json:"Message"`
	} `json:"UpdateStatus"`
}

type swarmSpec struct {
	Name         string            `json:"Name"`
	Labels       map[string]string `json:"Labels"`
	TaskTemplate struct {
		ContainerSpec struct {
			Image string   `json:"Image"`
			Env   []string `json:"Env"`
		} `json:"ContainerSpec"`
		Placement *struct {
			Constraints []string `json:"Constraints"`
		} `json:"Placement"`
	} `json:"TaskTemplate"`
	Mode struct {
		Replicated *struct {
			Replicas *uint64 `json:"Replicas"`
		} `json:"Replicated"`
		Global *struct{} `json:"Global"`
	} `json:"Mode"`
}

func (s swarmSpec) image() string {
	img, _, _ := strings.Cut(s.TaskTemplate.ContainerSpec.Image, "@")
	return img
}

func (s swarmSpec) replicas() *uint64 {
	if s.Mode.Replicated != nil {
		return s.Mode.Replicated.Replicas
	}
	return nil
}

func (s swarmSpec) constraints() []string {
	if s.TaskTemplate.Placement == nil {
		return nil
	}
	return s.TaskTemplate.Placement.Constraints
}

// userLabels are the service labels the compose file sets.
func (s swarmSpec) userLabels() map[string]string {
	out := map[string]string{}
	for k, v := range s.Labels {
		if strings.HasPrefix(k, "com.docker.stack.") || k == specHashLabel {
			continue
		}
		out[k] = v
	}
	return out
}

// specSHA fingerprints the spec as docker returns it; a rollback restores
// it byte for byte.
func (s *svcInspect) specSHA() string { return compactSHA(s.RawSpec) }

// compactSHA fingerprints a service spec as JSON. `docker service inspect`
// fills daemon defaults into Spec but not into PreviousSpec, so both are
// normalised first: zero values dropped, the defaulted fields filled in.
func compactSHA(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return remote.SHA256String(string(raw))
	}
	v = normalizeSpec(v)
	b, _ := json.Marshal(v) // map keys come out sorted
	return remote.SHA256String(string(b))
}

var (
	updateDefaults = map[string]any{"Parallelism": 1.0, "FailureAction": "pause", "Monitor": 5e9, "Order": "stop-first"}
	specDefaults   = map[string]map[string]any{
		"UpdateConfig":   updateDefaults,
		"RollbackConfig": updateDefaults,
	}
	taskDefaults      = map[string]map[string]any{"RestartPolicy": {"Condition": "any", "Delay": 5e9}}
	containerDefaults = map[string]any{"StopGracePeriod": 1e10}
)

func normalizeSpec(v any) any {
	v = dropZero(v)
	spec, ok := v.(map[string]any)
	if !ok {
		return v
	}
	fill := func(m map[string]any, key string, defs map[string]any) {
		sub, _ := m[key].(map[string]any)
		if sub == nil {
			sub = map[string]any{}
		}
		for k, d := range defs {
			if _, ok := sub[k]; !ok {
				sub[k] = d
			}
		}
		m[key] = sub
	}
	for k, defs := range specDefaults {
		fill(spec, k, defs)
	}
	tt, _ := spec["TaskTemplate"].(map[string]any)
	if tt == nil {
		return spec
	}
	for k, defs := range taskDefaults {
		fill(tt, k, defs)
	}
	if cs, _ := tt["ContainerSpec"].(map[string]any); cs != nil {
		for k, d := range containerDefaults {
			if _, ok := cs[k]; !ok {
				cs[k] = d
			}
		}
	}
	return spec
}

// dropZero removes nulls, zeros, false, "" and empty objects and lists.
func dropZero(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e = dropZero(e); e == nil {
				delete(x, k)
			} else {
				x[k] = e
			}
		}
		if len(x) == 0 {
			return nil
		}
		return x
	case []any:
		out := x[:0]
		for _, e := range x {
			if e = dropZero(e); e != nil {
				out = append(out, e)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case string:
		if x == "" {
			return nil
		}
	case float64:
		if x == 0 {
			return nil
		}
	case bool:
		if !x {
			return nil
		}
	}
	return v
}

func parseServiceInspect(out string) (map[string]*svcInspect, error) {
	out = strings.TrimSpace(out)
	if i := strings.Index(out, "["); i > 0 {
		out = out[i:]
	}
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raws); err != nil {
		return nil, fmt.Errorf("read docker service inspect: %w", err)
	}
	svcs := map[string]*svcInspect{}
	for _, r := range raws {
		var s svcInspect
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, fmt.Errorf("read docker service inspect: %w", err)
		}
		var spec struct {
			Spec json.RawMessage `json:"Spec"`
		}
		_ = json.Unmarshal(r, &spec)
		s.RawSpec = spec.Spec
		svcs[s.Spec.Name] = &s
	}
	return svcs, nil
}
