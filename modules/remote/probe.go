package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/iklimco/iklim/modules"
)

// Probe asks what a check needs to know about one path: its stat (as _st
// reports it, without following a final symlink) and, for a regular file,
// its sha256 and content. The runner answers the probes of many checks with
// one stat and one sha256sum for all of them (see ProbeScript), instead of
// a few programs per check.
type Probe struct {
	Path string
	Sum  bool // the sha256 of a regular file
	// Content is the whole content of a regular file; its sha256 is set
	// too.
	Content bool
	// DiffWant: the content of a regular file whose sha256 differs from
	// this one, when it is at most MaxDiff bytes (a diff's before side).
	// Implies Sum.
	DiffWant string
	// Target asks only the type and, for a symlink, its target: a symlink
	// asked for so alone is not stat'ed (its mode, owner and size stay
	// zero), which saves a program where nothing else is stat'ed.
	Target bool
}

// ProbeResult answers a Probe.
type ProbeResult struct {
	Stat FileStat
	// Content is the file's content, when asked for (Content, or DiffWant
	// with a file that differs and is small enough); nil otherwise.
	Content []byte
}

// ErrNoProbe is what Prober.Probe returns for a probe it cannot answer:
// run the check's own script instead.
var ErrNoProbe = errors.New("probe not answered")

// Prober is a Conn that answers probes; the runner's check-ahead batches
// are, and gather the probes of their checks.
type Prober interface {
	Probe(ctx context.Context, p Probe) (ProbeResult, error)
}

// ProbeStat is p answered by c when c is a Prober, else ok is false: the
// caller runs its own script.
func ProbeStat(ctx context.Context, c modules.Conn, p Probe) (res ProbeResult, ok bool, err error) {
	pr, isProber := c.(Prober)
	if !isProber || !Probeable(p) {
		return ProbeResult{}, false, nil
	}
	res, err = pr.Probe(ctx, p)
	if errors.Is(err, ErrNoProbe) {
		return ProbeResult{}, false, nil
	}
	return res, err == nil, err
}

// Probeable reports whether p can go in a ProbeScript: an absolute path
// whose name the tools print on one line, unescaped.
func Probeable(p Probe) bool {
	if !path.IsAbs(p.Path) || strings.ContainsAny(p.Path, "\n\\\x00") {
		return false
	}
	// A diff's path goes inside double quotes in a case pattern.
	return p.DiffWant == "" || len(p.DiffWant) == 64 && strings.Trim(p.DiffWant, "0123456789abcdef") == "" &&
		!strings.ContainsAny(p.Path, "\"$`")
}

// ProbeScript is one sh script that answers every probe of ps (each
// Probeable) with a fixed number of programs: one stat for every path, one
// sha256sum for every regular file whose sum is wanted, one readlink for
// the symlinks, one cat for the contents, and a head per differing file a
// diff wants. Its output is read by ParseProbes. Paths are listed once each.
func ProbeScript(ps []Probe) string { return probeScript(ps, "exit") }

// ProbeFunc is ProbeScript as the sh function name, which returns where
// the script exits: a batch calls it in its own shell, without the fork of
// a subshell.
func ProbeFunc(name string, ps []Probe) string {
	return name + "() {\n" + probeScript(ps, "return") + "}\n"
}

func probeScript(ps []Probe, quit string) string {
	set := probeSets(ps)
	paths, sums, contents := set.paths, set.sums, set.contents
	var b strings.Builder
	// _ikt prints a type letter per path; _iks stats the paths that exist
	// (but a symlink after -l, asked only its target), _ikf runs a program
	// on the regular files (not symlinks), _ikr reads the symlinks: each
	// builds its argument list in its own $@.
	b.WriteString(`_ikt() { for _p do if [ -L "$_p" ]; then printf l; elif [ -f "$_p" ]; then printf f; elif [ -d "$_p" ]; then printf d; elif [ -e "$_p" ]; then printf o; else printf -; fi; done; echo; }
_iks() { _n=$#; _l=; for _p do if [ "$_p" = -l ]; then _l=1; continue; fi; if [ -L "$_p" ]; then [ -n "$_l" ] || set -- "$@" "$_p"; elif [ -e "$_p" ]; then set -- "$@" "$_p"; fi; _l=; done; shift $_n; [ $# -eq 0 ] || stat -c '%f:%a:%u:%g:%U:%G:%s' -- "$@"; }
_ikf() { _c=$1; shift; _n=$#; for _p do if [ -f "$_p" ] && [ ! -L "$_p" ]; then set -- "$@" "$_p"; fi; done; shift $_n; [ $# -eq 0 ] || $_c -- "$@"; }
_ikr() { _n=$#; for _p do if [ -L "$_p" ]; then set -- "$@" "$_p"; fi; done; shift $_n; [ $# -eq 0 ] || readlink -- "$@"; }
`)
	all := quoteAll(paths)
	statArgs := make([]string, 0, len(paths))
	for _, p := range paths {
		if set.targetOnly[p] {
			statArgs = append(statArgs, "-l")
		}
		statArgs = append(statArgs, Quote(p))
	}
	fmt.Fprintf(&b, "_ikt %s\n_iks %s || %s 3\necho\n", all, strings.Join(statArgs, " "), quit)
	// The paths whose diff needs the sums: the content read below serves
	// the others.
	var diffs []string
	for _, p := range ps {
		if p.DiffWant != "" && !set.read[p.Path] && !slices.Contains(diffs, p.Path) {
			diffs = append(diffs, p.Path)
		}
	}
	switch {
	case len(sums) > 0 && len(diffs) > 0:
		// Kept for the diffs below, then printed; only when one of them is
		// a regular file, since a command substitution is a fork.
		var regular []string
		for _, p := range diffs {
			q := Quote(p)
			regular = append(regular, "{ [ -f "+q+" ] && [ ! -L "+q+" ]; }")
		}
		fmt.Fprintf(&b, "if %s; then\n_ikh=$(_ikf sha256sum %s) || %s 3\n[ -z \"$_ikh\" ] || printf '%%s\\n' \"$_ikh\"\nelse _ikh=; _ikf sha256sum %s || %s 3; fi\n",
			strings.Join(regular, " || "), quoteAll(sums), quit, quoteAll(sums), quit)
	case len(sums) > 0:
		// Straight out: a command substitution is a fork.
		fmt.Fprintf(&b, "_ikf sha256sum %s || %s 3\n", quoteAll(sums), quit)
	}
	b.WriteString("echo\n")
	fmt.Fprintf(&b, "_ikr %s || %s 3\necho\n", all, quit)
	for _, p := range ps {
		if p.DiffWant == "" || set.read[p.Path] {
			continue // the content read below serves the diff too
		}
		q := Quote(p.Path)
		// Same file, same want: the content goes once per probe, in order.
		fmt.Fprintf(&b, "if [ -f %s ] && [ ! -L %s ]; then case \"\n$_ikh\n\" in *\"\n%s  %s\n\"*) echo D0 ;; *) echo D1; head -c %d -- %s || %s 3 ;; esac; else echo D0; fi\n",
			q, q, p.DiffWant, p.Path, MaxDiff+1, q, quit)
	}
	if len(contents) > 0 {
		fmt.Fprintf(&b, "_ikf cat %s || %s 3\n", quoteAll(contents), quit)
	}
	return b.String()
}

// probeSet is what a probe script asks of ps: the distinct paths, those
// whose sum is wanted and those whose whole content is read, each in
// first-seen order; read holds the last as a set, targetOnly the paths
// every probe of which asks only Target.
type probeSet struct {
	paths, sums, contents []string
	read, targetOnly      map[string]bool
}

func probeSets(ps []Probe) probeSet {
	var set probeSet
	seen := map[string]bool{}
	add := func(list *[]string, kind, p string) {
		if !seen[kind+p] {
			seen[kind+p] = true
			*list = append(*list, p)
		}
	}
	for _, p := range ps {
		add(&set.paths, "p", p.Path)
		if p.Sum || p.Content || p.DiffWant != "" {
			add(&set.sums, "s", p.Path)
		}
		if p.Content {
			add(&set.contents, "c", p.Path)
		}
	}
	set.read = make(map[string]bool, len(set.contents))
	for _, p := range set.contents {
		set.read[p] = true
	}
	stat := map[string]bool{}
	for _, p := range ps {
		if !p.Target || p.Sum || p.Content || p.DiffWant != "" {
			stat[p.Path] = true
		}
	}
	set.targetOnly = map[string]bool{}
	for _, p := range set.paths {
		if !stat[p] {
			set.targetOnly[p] = true
		}
	}
	return set
}

func quoteAll(ps []string) string {
	q := make([]string, len(ps))
	for i, p := range ps {
		q[i] = Quote(p)
	}
	return strings.Join(q, " ")
}

// ParseProbes reads the output of ProbeScript(ps). An error means the
// output does not add up (a path changed meanwhile, a file could not be
// read): the probes are to be answered another way. A probe of a symlink
// that wants content gets ErrNoProbe in errs (the check resolves it).
func ParseProbes(ps []Probe, out string) (res []ProbeResult, errs []error, err error) {
	set := probeSets(ps)
	paths, sums, contents, read := set.paths, set.sums, set.contents, set.read
	bad := func(what string) ([]ProbeResult, []error, error) {
		return nil, nil, fmt.Errorf("probe output: %s", what)
	}
	line := func() (string, bool) {
		l, rest, ok := strings.Cut(out, "\n")
		out = rest
		return l, ok
	}
	types, ok := line()
	if !ok || len(types) != len(paths) {
		return bad("types")
	}
	stats := map[string]FileStat{}
	for i, p := range paths {
		if types[i] == '-' {
			stats[p] = FileStat{}
			continue
		}
		if types[i] == 'l' && set.targetOnly[p] {
			stats[p] = FileStat{Exists: true, Type: "link"} // not stat'ed
			continue
		}
		l, ok := line()
		if !ok {
			return bad("stat")
		}
		st, _, err := ParseStat(l + "\n\n\n")
		if err != nil {
			return bad(err.Error())
		}
		want := map[byte]string{'l': "link", 'f': "file", 'd': "directory", 'o': "other"}[types[i]]
		if st.Type != want {
			return bad("type of " + p + " changed")
		}
		stats[p] = st
	}
	if l, ok := line(); !ok || l != "" {
		return bad("stat end")
	}
	for _, p := range sums {
		if stats[p].Type != "file" {
			continue
		}
		l, ok := line()
		if !ok || len(l) < 66 || l[64:66] != "  " {
			return bad("sha256")
		}
		st := stats[p]
		st.SHA256 = l[:64]
		stats[p] = st
	}
	if l, ok := line(); !ok || l != "" {
		return bad("sha256 end")
	}
	for _, p := range paths {
		if stats[p].Type != "link" {
			continue
		}
		l, ok := line()
		if !ok {
			return bad("readlink")
		}
		st := stats[p]
		st.LinkTarget = l
		stats[p] = st
	}
	if l, ok := line(); !ok || l != "" {
		return bad("readlink end")
	}
	res = make([]ProbeResult, len(ps))
	errs = make([]error, len(ps))
	for i, p := range ps {
		if p.DiffWant == "" || read[p.Path] {
			continue
		}
		l, ok := line()
		switch {
		case !ok:
			return bad("diff")
		case l == "D0":
		case l == "D1":
			st := stats[p.Path]
			n := int(min(st.Size, MaxDiff+1))
			if len(out) < n {
				return bad("diff content")
			}
			b := out[:n]
			out = out[n:]
			if st.Size <= MaxDiff {
				if sha(b) != st.SHA256 {
					return bad("content of " + p.Path + " changed")
				}
				res[i].Content = []byte(b)
			}
		default:
			return bad("diff")
		}
	}
	content := map[string][]byte{}
	for _, p := range contents {
		st := stats[p]
		if st.Type != "file" {
			continue
		}
		if int64(len(out)) < st.Size {
			return bad("content")
		}
		b := out[:st.Size]
		out = out[st.Size:]
		if sha(b) != st.SHA256 {
			return bad("content of " + p + " changed")
		}
		content[p] = []byte(b)
	}
	if out != "" {
		return bad("trailing output")
	}
	for i, p := range ps {
		data := res[i].Content // the diff's head, where one was read
		if read[p.Path] {
			data = content[p.Path]
		}
		res[i], errs[i] = Answer(p, stats[p.Path], data)
	}
	return res, errs, nil
}

// Answer is the answer to p of a path with stat st and, for a regular
// file, content data (all of it, or at least what a diff's head reads),
// as ParseProbes gives it: the runner answers so the probes of a file it
// has just written whole, without reading it back.
func Answer(p Probe, st FileStat, data []byte) (ProbeResult, error) {
	res := ProbeResult{Stat: st}
	if !p.Sum && p.DiffWant == "" && !p.Content {
		res.Stat.SHA256 = ""
	}
	if p.DiffWant != "" && st.Type == "file" && st.SHA256 != p.DiffWant && st.Size <= MaxDiff {
		res.Content = data
	}
	if p.Content {
		switch st.Type {
		case "link":
			return res, ErrNoProbe
		case "file":
			res.Content = data
			if res.Content == nil {
				res.Content = []byte{}
			}
		}
	}
	return res, nil
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// ProbeAlone answers ps with one command on c (for probes that no batch
// gathered).
func ProbeAlone(ctx context.Context, c modules.Conn, ps []Probe) ([]ProbeResult, []error, error) {
	res, err := c.Run(ctx, ProbeScript(ps))
	if err != nil {
		return nil, nil, err
	}
	if res.ExitCode != 0 {
		return nil, nil, ErrNoProbe
	}
	return ParseProbes(ps, res.Stdout)
}
