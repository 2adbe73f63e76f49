// Command delayproxy puts network latency in front of the bench's sshd: a
// TCP proxy that holds every chunk it reads for the one-way delay before it
// writes it on, in each direction, keeping order. This kernel has no netem,
// so the delay is added in user space.
//
//	delayproxy -rtt 30ms -map 3299=2299,3300=2300 -stats stats.json
//
// Each -map entry LISTEN=BACKEND listens on 0.0.0.0:LISTEN and forwards a
// connection to the address it was made to (the bench's hosts are 127.0.x.y,
// all on one port) at port BACKEND. On SIGUSR1 it writes its counters, as
// JSON, to -stats (atomically, with a sequence number that grows): the
// connections, the chunks each way, and the round trips, where a round trip
// is a client-to-server chunk that follows server-to-client traffic on the
// same connection (the client waited for an answer). The first chunk a
// client sends counts too, as a connection's first trip. It exits on SIGTERM.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type counters struct {
	conns, roundTrips, c2s, s2c, bytesC2S, bytesS2C atomic.Int64
}

type chunk struct {
	at  time.Time
	buf []byte
}

func main() {
	rtt := flag.Duration("rtt", 30*time.Millisecond, "round-trip time to add (half each way)")
	maps := flag.String("map", "", "LISTEN=BACKEND port pairs, comma separated")
	statsPath := flag.String("stats", "", "file to write the counters to on SIGUSR1")
	flag.Parse()
	oneWay := *rtt / 2
	var c counters
	if *maps == "" {
		fail(fmt.Errorf("-map is required"))
	}
	for _, m := range strings.Split(*maps, ",") {
		l, b, ok := strings.Cut(m, "=")
		lp, err1 := strconv.Atoi(l)
		bp, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil {
			fail(fmt.Errorf("bad -map entry %q", m))
		}
		ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", lp))
		if err != nil {
			fail(err)
		}
		go serve(ln, bp, oneWay, &c)
	}

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	var seq int64
	for s := range sig {
		if s != syscall.SIGUSR1 {
			return
		}
		seq++
		if *statsPath == "" {
			continue
		}
		b, _ := json.Marshal(map[string]int64{
			"seq": seq, "connections": c.conns.Load(), "round_trips": c.roundTrips.Load(),
			"chunks_client_to_server": c.c2s.Load(), "chunks_server_to_client": c.s2c.Load(),
			"bytes_client_to_server": c.bytesC2S.Load(), "bytes_server_to_client": c.bytesS2C.Load(),
		})
		tmp := *statsPath + ".tmp"
		if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err == nil {
			_ = os.Rename(tmp, *statsPath)
		}
	}
}

func serve(ln net.Listener, backend int, oneWay time.Duration, c *counters) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "delayproxy:", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go handle(conn.(*net.TCPConn), backend, oneWay, c)
	}
}

// handle proxies one connection to the address it was made to, at port
// backend.
func handle(client *net.TCPConn, backend int, oneWay time.Duration, c *counters) {
	defer client.Close()
	ip := client.LocalAddr().(*net.TCPAddr).IP
	server, err := net.DialTCP("tcp4", nil, &net.TCPAddr{IP: ip, Port: backend})
	if err != nil {
		fmt.Fprintln(os.Stderr, "delayproxy: dial:", err)
		return
	}
	defer server.Close()
	_ = client.SetNoDelay(true)
	_ = server.SetNoDelay(true)
	c.conns.Add(1)

	// awaiting is true once the server has sent something since the
	// client's last chunk: the client's next chunk is a new round trip.
	var mu sync.Mutex
	awaiting := true
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pipe(server, client, oneWay, func(n int) {
			c.c2s.Add(1)
			c.bytesC2S.Add(int64(n))
			mu.Lock()
			if awaiting {
				c.roundTrips.Add(1)
				awaiting = false
			}
			mu.Unlock()
		})
	}()
	go func() {
		defer wg.Done()
		pipe(client, server, oneWay, func(n int) {
			c.s2c.Add(1)
			c.bytesS2C.Add(int64(n))
			mu.Lock()
			awaiting = true
			mu.Unlock()
		})
	}()
	wg.Wait()
}

// pipe copies src to dst, each chunk delivered oneWay after it was read,
// in order. seen is called as each chunk is read. When src ends, dst's
// write side is closed once every chunk is delivered.
func pipe(dst, src *net.TCPConn, oneWay time.Duration, seen func(int)) {
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		broken := false
		for ch := range q {
			if broken {
				continue
			}
			if d := time.Until(ch.at.Add(oneWay)); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(ch.buf); err != nil {
				broken = true
				_ = src.Close()
			}
		}
		_ = dst.CloseWrite()
	}()
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			seen(n)
			q <- chunk{at: time.Now(), buf: buf[:n]}
		}
		if err != nil {
			if err != io.EOF {
				_ = dst.Close()
			}
			break
		}
	}
	close(q)
	<-done
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "delayproxy:", err)
	os.Exit(2)
}
