package backup

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/iklimco/iklim/runner"
)

// stepLogName is the file in a run's journal directory that holds its
// events, one JSON object per line.
const stepLogName = "events.jsonl"

// StepLog keeps a run's events in its control journal
// ($IKLIM_STATE_DIR/runs/<id>/events.jsonl), so a report can show later
// where the time went and what each change's diff was. Events are already
// redacted by the engine; the log stores them as they come.
type StepLog struct {
	mu  sync.Mutex
	f   *os.File
	enc *json.Encoder
	err error
}

// OpenStepLog creates the step log of run id (its journal directory must
// have been claimed, as ClaimRunID does).
func OpenStepLog(id string) (*StepLog, error) {
	if !ValidRunID(id) {
		return nil, fmt.Errorf("step log: %q is not a run id", id)
	}
	f, err := os.OpenFile(filepath.Join(JournalDir(id), stepLogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("step log: %w", err)
	}
	return &StepLog{f: f, enc: json.NewEncoder(f)}, nil
}

// Event appends ev; it fits runner.Options.Events. The first write error is
// kept for Close.
func (l *StepLog) Event(ev runner.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = l.enc.Encode(ev)
	}
}

// Close closes the log and reports the first error it met.
func (l *StepLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := errors.Join(l.err, l.f.Close())
	if err != nil {
		return fmt.Errorf("step log: %w", err)
	}
	return nil
}

// ReadStepLog reads the events of run id from this control machine. A run
// recorded without a log returns nil and fs.ErrNotExist.
func ReadStepLog(id string) ([]runner.Event, error) {
	if !ValidRunID(id) {
		return nil, fmt.Errorf("step log: %q is not a run id", id)
	}
	f, err := os.Open(filepath.Join(JournalDir(id), stepLogName))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var evs []runner.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var ev runner.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue // a line cut short by a crash
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		return evs, fmt.Errorf("step log %s: %w", id, err)
	}
	return evs, nil
}
