package runner

// Finishing a host in its last batch: a host whose changes were recorded
// has its record finished with its result once its last step has ended
// (Recorder.Finish), in a command of its own after the plays. When the
// host's last steps are checked in one batch (checkahead.go), the batch
// script takes the finish as its last unit, behind a gate that opens with
// the host's result once every step of the batch has ended ok. A change or
// a failure in the batch shuts the gate, and Finish runs after the plays as
// before. A deploy that changes a step or two so saves a session per host.

import (
	"context"
	"strconv"
	"strings"

	"github.com/iklimco/iklim/inventories"
)

// lastPlays is, by host, the index of the last play that runs steps on it:
// its last segment there is the end of its work in the run.
func (e *engine) lastPlays() map[string]int {
	last := map[string]int{}
	for i, p := range e.pb.Plays {
		if len(SelectSteps(p.Steps, e.opts.Tags, e.opts.SkipTags)) == 0 {
			continue
		}
		for _, h := range e.plays[i] {
			last[h.Name] = i
		}
	}
	return last
}

// scriptFinish is the finish a batch that ends h's work may take, or nil:
// no recorder that can, check mode, the control machine (its record sums
// up every host), or no change recorded on h yet.
func (e *engine) scriptFinish(h *inventories.Host) *ScriptFinish {
	sf, ok := e.opts.Recorder.(ScriptFinisher)
	if !ok || e.opts.Check || h.Name == e.control.Name {
		return nil
	}
	e.mu.Lock()
	_, recorded := e.recorded[h.Name]
	e.mu.Unlock()
	if !recorded {
		return nil
	}
	return sf.FinishScript(h)
}

// finishIn opens the gate of r, the finish in batch b, with h's result,
// once every step of the batch has ended ok, and waits for the finish.
func (e *engine) finishIn(ctx context.Context, b *batchConn, r *batchReq, fin *ScriptFinish, h *inventories.Host) {
	if ctx.Err() != nil {
		b.open(r.order, false) // finishRecords tells the run was interrupted
		return
	}
	payload, err := fin.Payload(e.hostRecap(h.Name))
	if err != nil {
		b.open(r.order, false)
		return
	}
	b.openWith(r.order, payload)
	<-r.done
	if r.err == nil && fin.Done(r.res) == nil {
		e.mu.Lock()
		e.finished[h.Name] = true
		e.mu.Unlock()
	}
	// Otherwise finishRecords finishes h as it does every other host.
}

// queueFinish queues the finish's command at step order, behind a gate of
// its own, from the start, as a check waiting would be: it goes with the
// first round, and the script waits at its gate for the rest.
func (b *batchConn) queueFinish(order int, script string) *batchReq {
	r := &batchReq{order: order, cmd: script, gated: true, payload: true, done: make(chan struct{})}
	b.mu.Lock()
	b.gates[order] = &gate{decided: make(chan struct{})}
	b.pending = append(b.pending, r)
	reqs := b.take() // when every step is skipped, no check takes it
	b.mu.Unlock()
	if reqs != nil {
		go b.send(reqs)
	}
	return r
}

// payloadLines is what a gate that opens writes after its 1: the payload's
// line count, then its lines.
func payloadLines(payload string) string {
	if payload != "" && !strings.HasSuffix(payload, "\n") {
		payload += "\n"
	}
	return strconv.Itoa(strings.Count(payload, "\n")) + "\n" + payload
}

// payloadRead is the sh that reads payloadLines off stdin into
// FinishPayloadVar with builtins only; a payload cut short ends the script
// with status 1.
const payloadRead = `read _ikn || exit 1
` + FinishPayloadVar + `=; while [ "$_ikn" -gt 0 ] 2>/dev/null && IFS= read -r _ikl; do ` + FinishPayloadVar + `="$` + FinishPayloadVar + `$_ikl
"; _ikn=$((_ikn-1)); done
[ "$_ikn" = 0 ] || { echo "iklim: the payload came short" >&2; exit 1; }
`

// payloadCall runs body (a ScriptFinish's) as a function, not in a
// subshell (a fork), with stdin from /dev/null, and leaves its status in
// _ikst.
func payloadCall(body string) string {
	return "_ikfin() {\n" + strings.TrimRight(body, "\n") + "\n}\n_ikfin </dev/null; _ikst=$?; unset -f _ikfin\n"
}
