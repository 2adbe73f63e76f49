// Command parsescale measures how long loading a large inventory and a large
// playbook takes, and how much memory it needs (issue 15 part 6).
//
//	parsescale [-sizes 1000,10000,100000] [-o results.json]
//	parsescale -kind inventory|playbook -n 10000 [-cpuprofile f] [-memprofile f]
//
// Without -kind it generates each file for each size in a temp dir and loads
// it in a child process of its own (the same binary with -kind), so that
// each figure's peak RSS (getrusage ru_maxrss of that child) is its own. It
// prints a markdown table and, with -o, the figures as JSON.
//
// The inventory has n hosts (address, labels, vars), 10 groups holding n/10
// hosts each and a parent group of those; loading it is inventories.Load.
// The playbook has n steps, the bench workload's ten steps over and over,
// against a one-host inventory; loading it is playbooks.Load then
// playbooks.Compile, which evaluates and validates every step.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/playbooks"
)

// figure is one load of one file.
type figure struct {
	Kind      string  `json:"kind"`
	N         int     `json:"n"`
	FileMB    float64 `json:"file_mb"`
	ParseS    float64 `json:"parse_s"`             // inventories.Load, or playbooks.Load
	CompileS  float64 `json:"compile_s,omitempty"` // playbooks.Compile
	TotalS    float64 `json:"total_s"`
	CPUS      float64 `json:"cpu_s"`       // user+sys of the load, the figure to read on a loaded machine
	PeakRSSMB float64 `json:"peak_rss_mb"` // the child's ru_maxrss
	HeapMB    float64 `json:"total_alloc_mb"`
	Error     string  `json:"error,omitempty"`
}

func main() {
	kind := flag.String("kind", "", "inventory or playbook: load one file in this process")
	n := flag.Int("n", 10000, "hosts or steps, with -kind")
	file := flag.String("file", "", "with -kind: load this file (generated when empty)")
	inv := flag.String("inventory", "", "with -kind playbook: the inventory to compile against")
	cpuprof := flag.String("cpuprofile", "", "with -kind: write a CPU profile")
	memprof := flag.String("memprofile", "", "with -kind: write an allocation profile")
	sizes := flag.String("sizes", "1000,10000,100000", "sizes to measure, without -kind")
	out := flag.String("o", "", "write the figures as JSON here, without -kind")
	flag.Parse()

	if *kind != "" {
		if err := one(*kind, *n, *file, *inv, *cpuprof, *memprof); err != nil {
			fmt.Fprintln(os.Stderr, "parsescale:", err)
			os.Exit(1)
		}
		return
	}
	if err := all(*sizes, *out); err != nil {
		fmt.Fprintln(os.Stderr, "parsescale:", err)
		os.Exit(1)
	}
}

// all measures every kind at every size, each in a child process.
func all(sizeList, out string) error {
	tmp, err := os.MkdirTemp("", "iklim-parsescale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	invSmall := filepath.Join(tmp, "one-host.hcl")
	if err := writeInventory(invSmall, 1); err != nil {
		return err
	}
	var figs []figure
	for _, s := range strings.Split(sizeList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad size %q", s)
		}
		for _, kind := range []string{"inventory", "playbook"} {
			path := filepath.Join(tmp, fmt.Sprintf("%s-%d.hcl", kind, n))
			if kind == "inventory" {
				err = writeInventory(path, n)
			} else {
				err = writePlaybook(path, n)
			}
			if err != nil {
				return err
			}
			cmd := exec.Command(self, "-kind", kind, "-n", strconv.Itoa(n), "-file", path, "-inventory", invSmall)
			cmd.Stderr = os.Stderr
			b, runErr := cmd.Output()
			var f figure
			if err := json.Unmarshal(b, &f); err != nil {
				f = figure{Kind: kind, N: n, Error: fmt.Sprintf("%v: %s", runErr, b)}
			}
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				f.PeakRSSMB = round(float64(ru.Maxrss) / 1024)
			}
			if st, err := os.Stat(path); err == nil {
				f.FileMB = round(float64(st.Size()) / (1 << 20))
			}
			_ = os.Remove(path)
			figs = append(figs, f)
			fmt.Fprintf(os.Stderr, "parsescale: %s %d: %.3f s wall, %.3f s CPU, %.1f MB\n", kind, n, f.TotalS, f.CPUS, f.PeakRSSMB)
		}
	}
	fmt.Println("| file | n | file MB | parse s | compile s | wall s | CPU s | peak RSS MB | allocated MB |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, f := range figs {
		fmt.Printf("| %s | %d | %.1f | %.3f | %.3f | %.3f | %.3f | %.1f | %.0f |\n", f.Kind, f.N, f.FileMB, f.ParseS, f.CompileS, f.TotalS, f.CPUS, f.PeakRSSMB, f.HeapMB)
		if f.Error != "" {
			fmt.Printf("\nERROR %s %d: %s\n", f.Kind, f.N, f.Error)
		}
	}
	if out != "" {
		res := map[string]any{
			"date":    time.Now().UTC().Format(time.RFC3339),
			"go":      runtime.Version(),
			"nproc":   runtime.NumCPU(),
			"figures": figs,
			"goals":   "10k hosts and 10k steps each load in <= 1 s and <= 100 MB peak RSS; time grows linearly",
			"notes": []string{
				"inventory: inventories.Load of n hosts (address, labels, vars), 10 groups of n/10 hosts and a parent group",
				"playbook: playbooks.Load + playbooks.Compile of n steps (the bench workload's 10 steps repeated) against a one-host inventory",
				"cpu_s: user+sys time of the load (all threads, GC included); wall times on a shared 2-core machine vary with its load, CPU times much less",
				"peak_rss_mb: ru_maxrss of a child process that loads only that file; total_alloc_mb: bytes allocated by the load (runtime.MemStats.TotalAlloc)",
			},
		}
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	for _, f := range figs {
		if f.Error != "" {
			return fmt.Errorf("%s %d failed", f.Kind, f.N)
		}
	}
	return nil
}

// one loads one file in this process and prints its figure as JSON.
func one(kind string, n int, path, invPath, cpuprof, memprof string) error {
	if path == "" {
		dir, err := os.MkdirTemp("", "iklim-parsescale-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, kind+".hcl")
		if kind == "inventory" {
			err = writeInventory(path, n)
		} else {
			err = writePlaybook(path, n)
		}
		if err != nil {
			return err
		}
	}
	if kind == "playbook" && invPath == "" {
		invPath = filepath.Join(filepath.Dir(path), "one-host.hcl")
		if err := writeInventory(invPath, 1); err != nil {
			return err
		}
	}
	var smallInv *inventories.Inventory
	if kind == "playbook" {
		var diags error
		if smallInv, diags = loadInventory(invPath); diags != nil {
			return diags
		}
	}
	if cpuprof != "" {
		f, err := os.Create(cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if memprof != "" {
		runtime.MemProfileRate = 1 // every allocation, so that small types' live bytes are exact
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fig := figure{Kind: kind, N: n}
	var loaded []any // what the load returned, kept to the end so the profile sees it live
	cpuBefore := cpuTime()
	start := time.Now()
	switch kind {
	case "inventory":
		inv, err := loadInventory(path)
		if err != nil {
			return err
		}
		if len(inv.Hosts) != n {
			return fmt.Errorf("inventory has %d hosts, want %d", len(inv.Hosts), n)
		}
		fig.ParseS = time.Since(start).Seconds()
		loaded = append(loaded, inv)
	case "playbook":
		f, diags := playbooks.Load(path)
		if diags.HasErrors() {
			return fmt.Errorf("load playbook: %s", diags.Error())
		}
		fig.ParseS = time.Since(start).Seconds()
		t := time.Now()
		pb, diags := playbooks.Compile(f, playbooks.Options{Modules: stock.Registry(), Inventory: smallInv, ExtraVars: map[string]string{"base": "/tmp/b"}})
		if diags.HasErrors() {
			return fmt.Errorf("compile playbook: %s", diags.Error())
		}
		fig.CompileS = time.Since(t).Seconds()
		if got := len(pb.Plays[0].Steps); got != n {
			return fmt.Errorf("playbook has %d steps, want %d", got, n)
		}
		loaded = append(loaded, f, pb)
	default:
		return fmt.Errorf("unknown -kind %q", kind)
	}
	fig.TotalS = round(time.Since(start).Seconds())
	fig.CPUS = round(cpuTime() - cpuBefore)
	fig.ParseS, fig.CompileS = round(fig.ParseS), round(fig.CompileS)
	runtime.ReadMemStats(&after)
	fig.HeapMB = round(float64(after.TotalAlloc-before.TotalAlloc) / (1 << 20))
	if memprof != "" {
		f, err := os.Create(memprof)
		if err != nil {
			return err
		}
		defer f.Close()
		runtime.GC() // the profile's in-use figures are those of the last collection
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			return err
		}
	}
	runtime.KeepAlive(loaded)
	return json.NewEncoder(os.Stdout).Encode(fig)
}

func loadInventory(path string) (*inventories.Inventory, error) {
	inv, diags := inventories.Load(path)
	if diags.HasErrors() {
		return nil, fmt.Errorf("load inventory: %s", diags.Error())
	}
	return inv, nil
}

// writeInventory writes an inventory of n hosts.
func writeInventory(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "defaults {\n  user = \"iklim\"\n  port = 22\n  key = \"/k/id\"\n  known_hosts = \"/k/kh\"\n}\n")
	groups := min(10, n)
	members := make([][]string, groups)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("h%06d", i+1)
		fmt.Fprintf(w, "host %q {\n  address = \"10.%d.%d.%d\"\n  labels = { role = \"r%d\" }\n  vars = { n = %d }\n}\n",
			name, i>>16&255, i>>8&255, i&255, i%groups, i)
		members[i%groups] = append(members[i%groups], name)
	}
	var all []string
	for g, m := range members {
		fmt.Fprintf(w, "group \"g%d\" {\n  hosts = [", g)
		for i, h := range m {
			if i > 0 {
				w.WriteString(",")
			}
			fmt.Fprintf(w, "%q", h)
		}
		fmt.Fprintf(w, "]\n  vars = { tier = \"t%d\" }\n}\n", g)
		all = append(all, fmt.Sprintf("%q", fmt.Sprintf("g%d", g)))
	}
	fmt.Fprintf(w, "group \"everything\" {\n  children = [%s]\n}\n", strings.Join(all, ", "))
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writePlaybook writes a playbook of n steps: the bench workload's ten
// steps, repeated with distinct names and paths.
func writePlaybook(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	w.WriteString("variable \"base\" {\n  type = string\n}\n\nlocals {\n  d = \"${var.base}/${host.name}\"\n}\n\nplay \"scale\" {\n  hosts = \"all\"\n")
	for i := 0; i < n; i++ {
		d := fmt.Sprintf("${local.d}/s%d", i/10)
		switch i % 10 {
		case 0:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"command\"\n    argv = [\"uname\", \"-r\"]\n    changed = false\n    register = \"r%d\"\n  }\n", i, i)
		case 1:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"file\"\n    path = \"%s/app\"\n    state = \"directory\"\n    mode = \"0755\"\n  }\n", i, d)
		case 2:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"copy\"\n    dest = \"%s/app/app.conf\"\n    content = \"name = ${host.name}\\nport = 8080\\n\"\n    mode = \"0644\"\n  }\n", i, d)
		case 3:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"copy\"\n    dest = \"%s/app/secret.env\"\n    content = \"TOKEN=not-a-real-secret\\n\"\n    mode = \"0600\"\n  }\n", i, d)
		case 4:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"line\"\n    path = \"%s/app/limits.conf\"\n    line = \"max_connections = 100\"\n    create = true\n  }\n", i, d)
		case 5:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"file\"\n    path = \"%s/data\"\n    state = \"directory\"\n    mode = \"0750\"\n  }\n", i, d)
		case 6:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"stat\"\n    path = \"%s/app/app.conf\"\n    register = \"r%d\"\n  }\n", i, d, i)
		case 7:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"shell\"\n    cmd = \"test -f %s/app/app.conf\"\n    changed = false\n    when = self.r%d.exists\n  }\n", i, d, i-1)
		case 8:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"file\"\n    path = \"%s/current\"\n    state = \"link\"\n    src = \"%s/app\"\n  }\n", i, d, d)
		case 9:
			fmt.Fprintf(w, "  step \"s%d\" {\n    module = \"command\"\n    argv = [\"true\"]\n    changed = false\n  }\n", i)
		}
	}
	w.WriteString("}\n")
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cpuTime is this process's user+sys time so far, in seconds.
func cpuTime() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func round(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }
