// Command timeit runs a command and reports, as one JSON object, what the
// benchmark records for it: wall time, CPU time (user+sys) of the whole
// process tree, the largest single process's peak RSS, and a sampled peak of
// the tree's summed RSS.
//
//	timeit -o result.json [-sshd-pid PID[,PID…]] -- command args…
//
// timeit makes itself a child subreaper, so processes that daemonize under
// the command (Ansible's ControlPersist ssh masters) stay its descendants:
// when the command exits they are sent SIGTERM by pid, reaped, and their CPU
// time counts too. Wall time stops when the command itself exits.
//
// With -cgroup DIR (a cgroup v2 directory it creates and removes) the command
// starts inside that cgroup, and the CPU time reported is the cgroup's: every
// process of the tree counts, however it ended and whoever reaped it.
// Without, it is getrusage(RUSAGE_CHILDREN), which misses processes reaped by
// a parent that ignores SIGCHLD.
//
// With -sshd-pid it also reports the server side once the sshd listeners
// have no children left: the CPU time of -server-cgroup (the cgroup the
// sshds run in) when given, else of the listeners' reaped children.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// userHZ is the unit of the /proc tick counters (USER_HZ, 100 on Linux).
const userHZ = 100

type result struct {
	Command       string  `json:"command"`
	ExitCode      int     `json:"exit_code"`
	WallS         float64 `json:"wall_s"`
	UserS         float64 `json:"user_s"`
	SysS          float64 `json:"sys_s"`
	CPUS          float64 `json:"cpu_s"`            // the cgroup's with -cgroup, else getrusage's
	CPUSource     string  `json:"cpu_source"`       // cgroup or rusage
	CPURusageS    float64 `json:"cpu_rusage_s"`     // user+sys from getrusage(RUSAGE_CHILDREN)
	MaxRSSMB      float64 `json:"max_rss_mb"`       // largest single process (getrusage)
	TreeRSSPeakMB float64 `json:"tree_rss_peak_mb"` // sampled every 50 ms, shared pages counted per process
	Leftover      int     `json:"leftover_processes"`
	ServerCPUS    float64 `json:"server_cpu_s,omitempty"`
}

func main() {
	out := flag.String("o", "", "write the JSON result here (default stdout)")
	sshdPIDs := flag.String("sshd-pid", "", "pids of the sshd listeners, comma separated, to report server-side CPU")
	cgroup := flag.String("cgroup", "", "cgroup v2 `DIR` to create and run the command in")
	serverCgroup := flag.String("server-cgroup", "", "cgroup v2 `DIR` sshd runs in")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: timeit [-o FILE] [-sshd-pid PID] -- command args…")
		os.Exit(2)
	}
	if err := setSubreaper(); err != nil {
		fail(err)
	}
	var sshds []int
	for _, f := range strings.Split(*sshdPIDs, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			sshds = append(sshds, n)
		}
	}
	serverCPU := func() float64 {
		for _, p := range sshds {
			waitChildless(p)
		}
		if *serverCgroup != "" {
			return cgroupCPU(*serverCgroup)
		}
		var sum float64
		for _, p := range sshds {
			sum += sshdChildrenCPU(p)
		}
		return sum
	}
	serverBefore := serverCPU()

	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if *cgroup != "" {
		if err := os.Mkdir(*cgroup, 0o755); err != nil {
			fail(err)
		}
		fd, err := syscall.Open(*cgroup, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			fail(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if rss := treeRSS(os.Getpid()); rss > peak.Load() {
				peak.Store(rss)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()

	// Reap everything; note when the command itself ends.
	var wall time.Duration
	code := -1
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			break // ECHILD: nothing left
		}
		if pid == cmd.Process.Pid {
			wall = time.Since(start)
			code = ws.ExitStatus()
			if ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
			close(stop)
			<-sampled
			leftover := children(os.Getpid())
			for _, p := range leftover {
				_ = syscall.Kill(p, syscall.SIGTERM)
			}
			if len(leftover) > 0 {
				go func(pids []int) {
					time.Sleep(5 * time.Second)
					for _, p := range pids {
						_ = syscall.Kill(p, syscall.SIGKILL)
					}
				}(leftover)
			}
			res.Leftover = len(leftover)
		}
	}

	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	res.Command = strings.Join(flag.Args(), " ")
	res.ExitCode = code
	res.WallS = round(wall.Seconds())
	res.UserS = round(tv(ru.Utime))
	res.SysS = round(tv(ru.Stime))
	res.CPUS = round(res.UserS + res.SysS)
	res.CPURusageS = res.CPUS
	if *cgroup != "" {
		res.CPUS = round(cgroupCPU(*cgroup))
		res.CPUSource = "cgroup"
		_ = os.Remove(*cgroup) // empty now: every process was reaped
	} else {
		res.CPUSource = "rusage"
	}
	res.MaxRSSMB = round(float64(ru.Maxrss) / 1024)
	res.TreeRSSPeakMB = round(float64(peak.Load()) / (1 << 20))
	if len(sshds) > 0 {
		res.ServerCPUS = round(serverCPU() - serverBefore)
	}

	b, _ := json.Marshal(res)
	if *out == "" {
		fmt.Println(string(b))
	} else if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fail(err)
	}
	os.Exit(code)
}

var res result

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func round(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func setSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", errno)
	}
	return nil
}

// children lists pid's child processes (every thread's).
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// treeRSS sums the resident memory of pid's descendants, in bytes.
func treeRSS(pid int) int64 {
	var sum int64
	page := int64(os.Getpagesize())
	todo := children(pid)
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", p)); err == nil {
			if f := strings.Fields(string(b)); len(f) > 1 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				sum += n * page
			}
		}
		todo = append(todo, children(p)...)
	}
	return sum
}

// waitChildless waits (at most 15 s) until pid has no children: the sshd
// listener once every connection of a run has ended.
func waitChildless(pid int) {
	if pid <= 0 {
		return
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(children(pid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// cgroupCPU reads usage_usec from a cgroup v2 directory's cpu.stat, in
// seconds.
func cgroupCPU(dir string) float64 {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n / 1e6
		}
	}
	return 0
}

// sshdChildrenCPU is the CPU time (seconds) of the sshd listener's reaped
// children. It misses processes reaped by a parent that ignores SIGCHLD, so
// the cgroup figure is preferred.
func sshdChildrenCPU(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the ")" that ends the command name: state is field 3,
	// cutime and cstime are fields 16 and 17.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return 0
	}
	cu, _ := strconv.ParseFloat(f[13], 64)
	cs, _ := strconv.ParseFloat(f[14], 64)
	return (cu + cs) / userHZ
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "timeit:", err)
	os.Exit(125)
}
