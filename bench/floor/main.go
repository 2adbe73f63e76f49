// Command floor is the benchmark's lower bound for "one exec per task": a
// minimal golang.org/x/crypto/ssh client that opens one connection per host,
// all hosts at once, and runs N trivial commands per host one after another,
// each in a session of its own. Any tool that opens one session per task
// cannot beat it; iklim can only beat it by batching round trips.
//
//	floor -hosts hosts.txt -port 2299 -user iklimtest -key id -known-hosts kh -n 10
//
// hosts.txt holds one address per line, or ADDRESS:PORT for a host on a
// port of its own (the bench shards many hosts over several sshds). It prints one JSON object with the
// time to connect every host and the time to run every command.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func main() {
	hostsFile := flag.String("hosts", "", "file with one host address per line")
	port := flag.Int("port", 22, "ssh port")
	user := flag.String("user", "", "login user")
	keyPath := flag.String("key", "", "private key")
	khPath := flag.String("known-hosts", "", "known_hosts file")
	n := flag.Int("n", 10, "commands per host")
	cmd := flag.String("cmd", "true", "the trivial command")
	flag.Parse()

	hosts, err := readLines(*hostsFile)
	check(err)
	key, err := os.ReadFile(*keyPath)
	check(err)
	signer, err := ssh.ParsePrivateKey(key)
	check(err)
	hk, err := knownhosts.New(*khPath)
	check(err)
	cfg := &ssh.ClientConfig{
		User:            *user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hk,
		Timeout:         30 * time.Second,
	}

	start := time.Now()
	var failures atomic.Int64
	var lastConnect atomic.Int64
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := h
			if !strings.Contains(h, ":") {
				addr = net.JoinHostPort(h, strconv.Itoa(*port))
			}
			client, err := ssh.Dial("tcp", addr, cfg)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", h, err)
				failures.Add(1)
				return
			}
			defer client.Close()
			for {
				old := lastConnect.Load()
				now := int64(time.Since(start))
				if now <= old || lastConnect.CompareAndSwap(old, now) {
					break
				}
			}
			for i := 0; i < *n; i++ {
				s, err := client.NewSession()
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s: session: %v\n", h, err)
					failures.Add(1)
					return
				}
				err = s.Run(*cmd)
				s.Close()
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s: %s: %v\n", h, *cmd, err)
					failures.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	out := map[string]any{
		"hosts":            len(hosts),
		"commands":         len(hosts) * *n,
		"failures":         failures.Load(),
		"connect_all_s":    time.Duration(lastConnect.Load()).Seconds(),
		"total_s":          total.Seconds(),
		"commands_per_sec": float64(len(hosts)**n) / total.Seconds(),
	}
	check(json.NewEncoder(os.Stdout).Encode(out))
	if failures.Load() > 0 {
		os.Exit(1)
	}
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out, s.Err()
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(2)
	}
}
