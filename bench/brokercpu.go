package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// brokerPID is the local RabbitMQ node the benchmark talks to (the
// beam.smp process listening on the URL's port), 0 if there is none here.
// Set once by findBroker before any measurement.
var brokerPID atomic.Int64

// findBroker looks for the beam.smp process listening on port. Picking
// any beam.smp is not enough: the extra test nodes are beam.smp too, and
// so is every rabbitmqctl run while it lasts, so the first one in /proc
// changed under a measurement (and broker CPU came out negative).
func findBroker(port int) {
	inodes := listeningInodes(port)
	if len(inodes) == 0 {
		return
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if comm, err := os.ReadFile(d + "/comm"); err != nil || strings.TrimSpace(string(comm)) != "beam.smp" {
			continue
		}
		fds, _ := filepath.Glob(d + "/fd/*")
		for _, fd := range fds {
			if link, err := os.Readlink(fd); err == nil && inodes[link] {
				pid, _ := strconv.ParseInt(filepath.Base(d), 10, 64)
				brokerPID.Store(pid)
				return
			}
		}
	}
}

// listeningInodes returns the "socket:[inode]" names of the TCP sockets
// listening on port, from /proc/net/tcp and tcp6.
func listeningInodes(port int) map[string]bool {
	out := map[string]bool{}
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
			fs := strings.Fields(line)
			if len(fs) > 9 && strings.HasSuffix(fs[1], suffix) && fs[3] == "0A" {
				out["socket:["+fs[9]+"]"] = true
			}
		}
	}
	return out
}

// brokerCPU is the user+sys CPU so far of the local RabbitMQ node (from
// /proc/PID/stat), or 0 if there is none: a broker elsewhere is not
// measured. It shows when the broker, not the client, bounds a scenario.
func brokerCPU() time.Duration {
	pid := brokerPID.Load()
	if pid == 0 {
		return 0
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command: state is field 3, utime 14, stime 15.
	_, rest, ok := strings.Cut(string(stat), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux.
const clockTicks = 100
