// Package hclchunk parses large HCL native-syntax files in pieces.
//
// hclsyntax lexes a whole file into one token slice before parsing it. The
// slice grows by append, a quarter at a time once it is large, so a file of
// n tokens allocates and copies about five times its final size (96 bytes
// a token): for a 10k-host inventory, most of the parse's time and memory.
// Each cuts a large file at the newlines that end its top-level items (and
// a large block's body at its items' ends, recursively) and parses each
// piece on its own, with its true start position, so every range is the one
// a whole-file parse gives. The pieces are parsed concurrently, a few ahead
// of where Each's reader (or the merge of a large block's body) is, and
// taken in file order. It falls back to the whole-file parse when a piece
// fails to parse or a cut point is in doubt, so invalid files get
// hclsyntax's own diagnostics.
package hclchunk

import (
	"bytes"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/sourcegraph/conc/pool"
)

const (
	// minSplit is the smallest file or block body parsed in pieces:
	// smaller ones gain nothing.
	minSplit = 256 << 10
	// pieceSize is the size a piece grows to before it is cut.
	pieceSize = 8 << 10
)

// Each parses src as hclparse.Parser.ParseHCL does, in pieces when src is
// large, and hands the file's top-level items to read a piece at a time, in
// file order, as they are parsed, instead of merging them into one body: a
// reader that keeps only what it takes from each piece never has the whole
// syntax tree in memory. The file recorded in p (a filename already there
// is read again from its recorded source) names the top-level block an
// offset is in, for diagnostics, but has an empty body. When the pieces
// cannot stand for the file, it is parsed whole and recorded with its
// syntax tree: reset is called if read has been, and read gets the whole
// body unless it has errors. Errors are hclsyntax's own either way.
func Each(p *hclparse.Parser, src []byte, filename string, read func(*hclsyntax.Body), reset func()) (*hcl.File, hcl.Diagnostics) {
	_, recorded := p.Files()[filename]
	f, diags := each(Source(p, src, filename), filename, minSplit, pieceSize, read, reset)
	if !recorded {
		p.AddFile(filename, f)
	}
	return f, diags
}

// Source is what Each reads: the source recorded in p under filename, else
// src.
func Source(p *hclparse.Parser, src []byte, filename string) []byte {
	if f := p.Files()[filename]; f != nil {
		return f.Bytes
	}
	return src
}

func each(src []byte, filename string, min, piece int, read func(*hclsyntax.Body), reset func()) (*hcl.File, hcl.Diagnostics) {
	readSome := false
	whole := func() (*hcl.File, hcl.Diagnostics) {
		f, diags := hclsyntax.ParseConfig(src, filename, fileStart)
		if readSome {
			reset()
		}
		if !diags.HasErrors() {
			read(f.Body.(*hclsyntax.Body))
		}
		return f, diags
	}
	c, ok := plan(src, filename, min, piece)
	if !ok {
		return whole()
	}
	defer c.feed.stop() // a panicking reader too; stop may be called twice
	var first hcl.Range
	var heads heads
	attrs := map[string]bool{}
	last, ok := c.items(0, len(src), true, func(b *hclsyntax.Body, r hcl.Range) bool {
		for name := range b.Attributes {
			if attrs[name] {
				return false // "Attribute redefined": the whole parse says so
			}
			attrs[name] = true
		}
		if !readSome {
			first = r
		}
		heads = heads.add(b.Blocks)
		read(b)
		readSome = true
		return true
	})
	c.feed.stop() // before a whole-file parse, which needs no pieces
	if !ok {
		return whole()
	}
	body := &hclsyntax.Body{Attributes: hclsyntax.Attributes{}, Blocks: hclsyntax.Blocks{},
		SrcRange: hcl.RangeBetween(first, last.SrcRange), EndRange: last.EndRange}
	return &hcl.File{Body: body, Bytes: src, Nav: heads}, c.diags
}

var fileStart = hcl.Pos{Line: 1, Column: 1, Byte: 0}

// plan cuts src into pieces and starts parsing them; ok is false when src
// is to be parsed whole: it is small, starts with a byte order mark, or
// its items are not understood.
func plan(src []byte, filename string, min, size int) (c *chunker, ok bool) {
	if len(src) < min || bytes.HasPrefix(src, []byte("\xef\xbb\xbf")) {
		return nil, false
	}
	// A first walk only plans the pieces; they are parsed meanwhile, as the
	// second walk takes them (or parses one itself, after a failure changed
	// the cuts).
	c = &chunker{src: src, filename: filename, min: min, piece: size, planning: true}
	if _, _, _, ok := c.body(0, len(src), true); !ok {
		return nil, false
	}
	c.planning = false
	c.parsed = make(map[span]*piece, len(c.planned))
	for i, pc := range c.planned {
		pc.index, pc.done = i, make(chan struct{})
		c.parsed[pc.span] = pc
	}
	c.feed = c.startFeeding()
	c.planned = nil
	return c, true
}

type chunker struct {
	src        []byte
	filename   string
	min, piece int
	diags      hcl.Diagnostics // warnings only: an error falls back

	lineOff, line int // a cursor for lineAt

	planning bool            // parsePiece only records its piece
	planned  []*piece        // in file order
	parsed   map[span]*piece // by span, until taken
	feed     *feeder
}

type span struct{ lo, hi int }

// piece is src[lo:hi] parsed on its own.
type piece struct {
	span
	index int // in file order
	start hcl.Pos
	body  *hclsyntax.Body
	diags hcl.Diagnostics
	done  chan struct{} // closed once parsed, or skipped after a failure
}

func (pc *piece) parse(src []byte, filename string) {
	f, diags := hclsyntax.ParseConfig(src[pc.lo:pc.hi:pc.hi], filename, pc.start)
	pc.body, pc.diags = f.Body.(*hclsyntax.Body), diags
}

// feeder parses the planned pieces in file order, one per CPU at a time,
// and no further ahead of the piece the merge is at than it takes to keep
// the CPUs busy: pieces that are read and dropped one by one are then never
// all in memory. Each piece writes only itself, so the result does not
// depend on scheduling. After an error the rest are skipped: the file is
// parsed whole anyway, or a piece that is still needed is parsed when taken.
type feeder struct {
	mu    sync.Mutex
	cond  sync.Cond
	at    int // the merge is at this piece: those before it are done with
	ahead int
	quit  bool
	done  chan struct{}
}

func (c *chunker) startFeeding() *feeder {
	procs := runtime.GOMAXPROCS(0)
	f := &feeder{ahead: 2*procs + 2, done: make(chan struct{})}
	f.cond.L = &f.mu
	planned := c.planned
	go func() {
		defer close(f.done)
		var failed atomic.Bool
		p := pool.New().WithMaxGoroutines(procs)
		for i, pc := range planned {
			if !f.wait(pc.index) {
				break
			}
			planned[i] = nil // not kept here: the merge drops it once taken
			p.Go(func() {
				defer close(pc.done)
				if failed.Load() {
					return
				}
				pc.parse(c.src, c.filename)
				if pc.diags.HasErrors() {
					failed.Store(true)
				}
			})
		}
		p.Wait()
	}()
	return f
}

// wait blocks until piece i may be parsed; false once stopped.
func (f *feeder) wait(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for !f.quit && i >= f.at+f.ahead {
		f.cond.Wait()
	}
	return !f.quit
}

// reach says the merge is at piece i. It may skip pieces (those of a large
// block that failed to parse in pieces), so it is told before it waits for
// one, not only after.
func (f *feeder) reach(i int) {
	f.mu.Lock()
	if i > f.at {
		f.at = i
		f.cond.Broadcast()
	}
	f.mu.Unlock()
}

// stop ends the parsing of pieces not started and waits for the others.
func (f *feeder) stop() {
	f.mu.Lock()
	f.quit = true
	f.cond.Broadcast()
	f.mu.Unlock()
	<-f.done
}

// lineAt returns the line number of the byte at off.
func (c *chunker) lineAt(off int) int {
	if off < c.lineOff || c.line == 0 {
		c.lineOff, c.line = 0, 1
	}
	c.line += bytes.Count(c.src[c.lineOff:off], []byte("\n"))
	c.lineOff = off
	return c.line
}

// parsePiece returns src[lo:hi] parsed, lo at the start of a line; while
// planning, an empty body.
func (c *chunker) parsePiece(lo, hi int) (*hclsyntax.Body, bool) {
	pc := c.parsed[span{lo, hi}]
	switch {
	case pc != nil:
		delete(c.parsed, pc.span)
		c.feed.reach(pc.index)
		<-pc.done
		c.feed.reach(pc.index + 1)
		if pc.body == nil && !pc.diags.HasErrors() { // skipped after another piece failed
			pc.parse(c.src, c.filename)
		}
	case c.planning:
		pc = &piece{span: span{lo, hi}, start: hcl.Pos{Line: c.lineAt(lo), Column: 1, Byte: lo}}
		c.planned = append(c.planned, pc)
		return &hclsyntax.Body{Attributes: hclsyntax.Attributes{}}, true
	default:
		pc = &piece{span: span{lo, hi}, start: hcl.Pos{Line: c.lineAt(lo), Column: 1, Byte: lo}}
		pc.parse(c.src, c.filename)
	}
	if pc.diags.HasErrors() {
		return nil, false
	}
	c.diags = append(c.diags, pc.diags...)
	return pc.body, true // the only reference to it once taken
}

// body parses the items in src[lo:hi] (lo at a line start) piece by piece
// and merges them. first is the range of the first piece's body start, last
// the last piece's body (with top, always a parsed piece ending at hi).
func (c *chunker) body(lo, hi int, top bool) (body *hclsyntax.Body, first hcl.Range, last *hclsyntax.Body, ok bool) {
	body = &hclsyntax.Body{Attributes: hclsyntax.Attributes{}, Blocks: hclsyntax.Blocks{}}
	haveFirst := false
	last, ok = c.items(lo, hi, top, func(b *hclsyntax.Body, r hcl.Range) bool {
		for name, a := range b.Attributes {
			if _, dup := body.Attributes[name]; dup {
				return false // "Attribute redefined": the whole parse says so
			}
			body.Attributes[name] = a
		}
		body.Blocks = append(body.Blocks, b.Blocks...)
		if !haveFirst {
			first, haveFirst = r, true
		}
		return true
	})
	if !ok {
		return nil, first, nil, false
	}
	return body, first, last, true
}

// items parses the items in src[lo:hi] (lo at a line start) piece by piece
// and hands each piece's body to add in file order, with the range where a
// body starting with it would start; add may refuse it. last is the last
// piece's body (with top, always a parsed piece ending at hi).
func (c *chunker) items(lo, hi int, top bool, add func(b *hclsyntax.Body, r hcl.Range) bool) (last *hclsyntax.Body, ok bool) {
	ends, ok := scan(c.src, lo, hi)
	if !ok {
		return nil, false
	}
	flush := func(a, b int) bool {
		if a == b && !(top && b == hi) {
			return true
		}
		pb, ok := c.parsePiece(a, b)
		if ok {
			last = pb
			ok = add(pb, pb.SrcRange)
		}
		return ok
	}
	from, prev := lo, lo
	for _, end := range ends {
		if end-prev >= c.min && c.src[end-1] == '\n' {
			// One large item: a block whose body is cut in turn.
			if !flush(from, prev) {
				return nil, false
			}
			blk, head, ok := c.block(prev, end)
			if !ok {
				if !flush(prev, end) {
					return nil, false
				}
			} else {
				b := &hclsyntax.Body{Attributes: hclsyntax.Attributes{}, Blocks: hclsyntax.Blocks{blk}}
				if !add(b, head) {
					return nil, false
				}
			}
			from, prev = end, end
			continue
		}
		if end-from >= c.piece && end < hi { // the last piece ends at hi
			if !flush(from, end) {
				return nil, false
			}
			from = end
		}
		prev = end
	}
	if !flush(from, hi) {
		return nil, false
	}
	return last, true
}

// block parses the item src[lo:hi], which ends with a newline, as a block
// whose body is parsed in pieces. ok is false when it is not a block of the
// plain multi-line form "TYPE LABELS… {\n … \n}\n". head is where a body
// starting with the item would start.
func (c *chunker) block(lo, hi int) (blk *hclsyntax.Block, head hcl.Range, ok bool) {
	ob := openBrace(c.src, lo, hi)
	if ob < 0 {
		return nil, head, false
	}
	// Nothing but blanks after "{" on its line, and before "}" on its.
	eol := bytes.IndexByte(c.src[ob:hi], '\n')
	if eol < 0 || len(bytes.Trim(c.src[ob+1:ob+eol], " \t\r")) != 0 {
		return nil, head, false
	}
	innerLo := ob + eol + 1
	cb := hi - 1 // the newline
	for cb > innerLo && (c.src[cb-1] == ' ' || c.src[cb-1] == '\t' || c.src[cb-1] == '\r') {
		cb--
	}
	cb--
	if cb < innerLo || c.src[cb] != '}' {
		return nil, head, false
	}
	innerHi := bytes.LastIndexByte(c.src[:cb], '\n') + 1
	if innerHi < innerLo || len(bytes.Trim(c.src[innerHi:cb], " \t")) != 0 {
		return nil, head, false
	}
	// The header, parsed as an empty block at its true position.
	hsrc := make([]byte, 0, ob+1-lo+2)
	hsrc = append(append(hsrc, c.src[lo:ob+1]...), '}', '\n')
	f, diags := hclsyntax.ParseConfig(hsrc, c.filename, hcl.Pos{Line: c.lineAt(lo), Column: 1, Byte: lo})
	hb, _ := f.Body.(*hclsyntax.Body)
	if diags.HasErrors() || hb == nil || len(hb.Blocks) != 1 || len(hb.Attributes) != 0 {
		return nil, head, false
	}
	blk = hb.Blocks[0]
	inner, _, _, ok := c.body(innerLo, innerHi, false)
	if !ok {
		return nil, head, false
	}
	line := c.lineAt(cb)
	col := cb - innerHi + 1
	cbr := hcl.Range{Filename: c.filename,
		Start: hcl.Pos{Line: line, Column: col, Byte: cb},
		End:   hcl.Pos{Line: line, Column: col + 1, Byte: cb + 1}}
	inner.SrcRange = hcl.RangeBetween(blk.OpenBraceRange, cbr)
	inner.EndRange = hcl.Range{Filename: c.filename, Start: cbr.End, End: cbr.End}
	blk.Body = inner
	blk.CloseBraceRange = cbr
	return blk, hb.SrcRange, true
}

// scan returns the offsets just after each newline in src[lo:hi] that ends
// a top-level item (outside brackets, strings, comments and heredocs),
// and hi when the last item has no newline. ok is false when src[lo:hi]
// does not end at the top level or a construct is not understood: the
// caller then parses it whole.
func scan(src []byte, lo, hi int) (ends []int, ok bool) {
	_, ends, ok = walk(src, lo, hi, false)
	if ok && (len(ends) == 0 || ends[len(ends)-1] != hi) {
		ends = append(ends, hi)
	}
	return ends, ok
}

// openBrace returns the offset of the first "{" at the top level of
// src[lo:hi], or -1.
func openBrace(src []byte, lo, hi int) int {
	at, _, ok := walk(src, lo, hi, true)
	if !ok {
		return -1
	}
	return at
}

// walk is scan, or with brace the offset of the first top-level "{".
func walk(src []byte, lo, hi int, brace bool) (at int, ends []int, ok bool) {
	var stack []byte // ( [ { brackets, i an interpolation, " a string
	for i := lo; i < hi; i++ {
		ch := src[i]
		top := byte(0)
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top == '"' {
			switch {
			case ch == '\\':
				i++
			case ch == '\n':
				return -1, nil, false
			case (ch == '$' || ch == '%') && i+2 < hi && src[i+1] == ch && src[i+2] == '{':
				i += 2 // $${ and %%{ are literal
			case (ch == '$' || ch == '%') && i+1 < hi && src[i+1] == '{':
				stack = append(stack, 'i')
				i++
			case ch == '"':
				stack = stack[:len(stack)-1]
			}
			continue
		}
		switch ch {
		case '"', '(', '[':
			stack = append(stack, ch)
		case '{':
			if brace && len(stack) == 0 {
				return i, nil, true
			}
			stack = append(stack, ch)
		case ')', ']', '}':
			want := byte('{')
			switch ch {
			case ')':
				want = '('
			case ']':
				want = '['
			}
			if top != want && !(ch == '}' && top == 'i') {
				return -1, nil, false
			}
			stack = stack[:len(stack)-1]
		case '#':
			i = lineEnd(src, i, hi) - 1
		case '/':
			switch {
			case i+1 < hi && src[i+1] == '/':
				i = lineEnd(src, i, hi) - 1
			case i+1 < hi && src[i+1] == '*':
				e := bytes.Index(src[i+2:hi], []byte("*/"))
				if e < 0 {
					return -1, nil, false
				}
				i += 2 + e + 1
			}
		case '<':
			if i+1 < hi && src[i+1] == '<' {
				e, ok := heredoc(src, i, hi)
				if !ok {
					return -1, nil, false
				}
				i = e - 1
			}
		case '\n':
			if len(stack) == 0 {
				ends = append(ends, i+1)
			}
		}
	}
	if len(stack) != 0 || brace {
		return -1, nil, false
	}
	return -1, ends, true
}

// lineEnd returns the offset of the newline ending the line at i, or hi.
func lineEnd(src []byte, i, hi int) int {
	if e := bytes.IndexByte(src[i:hi], '\n'); e >= 0 {
		return i + e
	}
	return hi
}

// heredoc skips the heredoc starting with "<<" at i: it returns the offset
// just after its closing marker.
func heredoc(src []byte, i, hi int) (int, bool) {
	j := i + 2
	if j < hi && src[j] == '-' {
		j++
	}
	k := j
	for k < hi && (src[k] == '_' || src[k] == '-' || 'a' <= src[k] && src[k] <= 'z' || 'A' <= src[k] && src[k] <= 'Z' || k > j && '0' <= src[k] && src[k] <= '9') {
		k++
	}
	marker := src[j:k]
	if len(marker) == 0 {
		return 0, false
	}
	if k < hi && src[k] == '\r' {
		k++
	}
	if k >= hi || src[k] != '\n' {
		return 0, false
	}
	for line := k + 1; line < hi; {
		e := lineEnd(src, line, hi)
		if bytes.Equal(bytes.Trim(src[line:e], " \t\r"), marker) {
			return line + bytes.Index(src[line:e], marker) + len(marker), true
		}
		line = e + 1
	}
	return 0, false
}

// heads is the navigation of a file read piece by piece (Each), which names
// the top-level block holding an offset in diagnostics: the top-level
// blocks' headers in file order, without their bodies.
type heads []head

type head struct {
	typ      string
	labels   []string
	rng, def hcl.Range
}

func (hs heads) add(blocks hclsyntax.Blocks) heads {
	for _, b := range blocks {
		hs = append(hs, head{typ: b.Type, labels: b.Labels, rng: b.Range(), def: b.DefRange()})
	}
	return hs
}

func (hs heads) block(offset int) (head, bool) {
	i := sort.Search(len(hs), func(i int) bool { return hs[i].rng.End.Byte > offset })
	if i < len(hs) && hs[i].rng.ContainsOffset(offset) {
		return hs[i], true
	}
	return head{}, false
}

// ContextString names the top-level block holding offset: TYPE "LABEL"….
func (hs heads) ContextString(offset int) string {
	if h, ok := hs.block(offset); ok {
		return contextString(h.typ, h.labels)
	}
	return ""
}

// ContextDefRange is the definition range of the top-level block holding
// offset.
func (hs heads) ContextDefRange(offset int) hcl.Range {
	h, _ := hs.block(offset)
	return h.def
}

func contextString(typ string, labels []string) string {
	s := typ
	for _, l := range labels {
		s += fmt.Sprintf(" %q", l)
	}
	return s
}
