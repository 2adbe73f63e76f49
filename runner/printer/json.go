package printer

import (
	"encoding/json"
	"io"
	"sync"

	"github.com/iklimco/iklim/runner"
)

// EventSchema is the version of the JSON events that docs/events.md and
// docs/events.schema.json describe: it changes when a field changes
// meaning or goes away, not when a field or an event type is added.
const EventSchema = 1

// JSON writes one JSON object per event, one per line, each with the
// schema version first (docs/events.md); the last line is the recap.
type JSON struct {
	W   io.Writer
	mu  sync.Mutex
	enc *json.Encoder
}

type jsonEvent struct {
	Schema int `json:"schema"`
	runner.Event
}

// Event implements runner.Options.Events.
func (p *JSON) Event(ev runner.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.enc == nil {
		p.enc = json.NewEncoder(p.W)
	}
	_ = p.enc.Encode(jsonEvent{Schema: EventSchema, Event: ev})
}
