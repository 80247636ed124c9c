package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is a worker process the bench started, in its own process group,
// with its process tree's RSS sampled every 50ms.
type proc struct {
	cmd     *exec.Cmd
	name    string
	stderr  *bytes.Buffer
	peakRSS atomic.Int64 // bytes
	lastRSS atomic.Int64
	stopS   chan struct{}
	wg      sync.WaitGroup
	exited  chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func startProc(name, dir string, env []string, argv ...string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{cmd: cmd, name: name, stderr: &bytes.Buffer{}, stopS: make(chan struct{}), exited: make(chan struct{})}
	lb := &lockedBuf{b: p.stderr}
	cmd.Stdout = lb
	cmd.Stderr = lb
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	p.wg.Add(1)
	go p.sample()
	return p, nil
}

func (p *proc) sample() {
	defer p.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		rss := treeRSS(p.cmd.Process.Pid)
		p.lastRSS.Store(rss)
		if rss > p.peakRSS.Load() {
			p.peakRSS.Store(rss)
		}
		select {
		case <-t.C:
		case <-p.stopS:
			return
		case <-p.exited:
			return
		}
	}
}

// resetPeak starts a new peak measurement from the current RSS.
func (p *proc) resetPeak() { p.peakRSS.Store(p.lastRSS.Load()) }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends sig to the worker's main process, waits up to grace, then
// kills its process group (only processes this bench started).
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	close(p.stopS)
	p.wg.Wait()
	if p.alive() {
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.exited:
		case <-time.After(grace):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	// Children of a prefork pool left behind by a cold shutdown.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

func (p *proc) log() string {
	s := p.stderr.String()
	if len(s) > 3000 {
		s = "..." + s[len(s)-3000:]
	}
	return s
}

// treeRSS sums VmRSS of pid and all its descendants (bytes).
func treeRSS(root int) int64 {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces.
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	var total int64
	stack := []int{root}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		total += vmRSS(pid)
		stack = append(stack, children[pid]...)
	}
	return total
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// startGocelery execs the built gocelery binary on queue q.
func (b *bench) startGocelery(q string, conc int, extra ...string) (*proc, error) {
	return b.startGoceleryEnv(q, nil, append([]string{"-c", strconv.Itoa(conc), "-n", "bench@%h"}, extra...)...)
}

// startGoceleryEnv execs gocelery on q with only the given flags (none:
// the defaults users run) and extra environment.
func (b *bench) startGoceleryEnv(q string, env []string, flags ...string) (*proc, error) {
	args := []string{b.goBin, "worker", "-b", b.brokerURL, "--result-backend", b.redisURL, "-Q", q, "-l", "WARNING"}
	if !slices.Contains(flags, "-n") {
		args = append(args, "-n", "bench@%h")
	}
	return startProc("gocelery", b.root, env, append(args, flags...)...)
}

// startPython starts Celery 5.7's worker on the interop task module.
func (b *bench) startPython(q string, pool string, conc int) (*proc, error) {
	return b.startPythonEnv(q, pool, conc, "pybench@%h", nil)
}

func (b *bench) startPythonEnv(q string, pool string, conc int, name string, extraEnv []string) (*proc, error) {
	args := []string{b.python, "-m", "celery", "-A", "pytasks", "worker", "-Q", q,
		"-c", strconv.Itoa(conc), "-P", pool, "-l", "WARNING", "-n", name,
		"--without-gossip", "--without-mingle", "--without-heartbeat"}
	env := append([]string{"CELERY_BROKER_URL=" + b.brokerURL, "CELERY_RESULT_BACKEND=" + b.redisURL}, extraEnv...)
	return startProc("python", filepath.Join(b.root, "interop"), env, args...)
}

// cpuTicks is utime+stime of pid and its descendants, in clock ticks
// (USER_HZ, 100 per second on Linux).
func cpuTicks(root int) int64 {
	var total int64
	for _, pid := range treePids(root) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += u + s
	}
	return total
}

// treePids lists root and its descendants.
func treePids(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{}
	stack := []int{root}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		out = append(out, pid)
		stack = append(stack, children[pid]...)
	}
	return out
}

// pidsByComm finds running processes by their command name (comm), to
// account the broker's and Redis's CPU time during a run.
func pidsByComm(names ...string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		for _, n := range names {
			if strings.TrimSpace(string(c)) == n {
				out = append(out, pid)
			}
		}
	}
	return out
}

// cpuSnap is CPU time (ticks) of the worker tree, RabbitMQ and Redis.
type cpuSnap struct{ worker, rabbit, redis int64 }

func (b *bench) snap(workerPids ...int) cpuSnap {
	var s cpuSnap
	for _, p := range workerPids {
		s.worker += cpuTicks(p)
	}
	for _, p := range b.rabbitPids {
		s.rabbit += cpuTicks(p)
	}
	for _, p := range b.redisPids {
		s.redis += cpuTicks(p)
	}
	return s
}

// foreignWorkers lists Celery/gocelery worker processes and benches that
// are not this bench or its children.
func foreignWorkers() []string {
	mine := map[int]bool{}
	for _, p := range treePids(os.Getpid()) {
		mine[p] = true
	}
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || mine[pid] {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(strings.TrimRight(string(raw), "\x00"), "\x00", " ")
		isWorker := strings.Contains(cmd, "celery") && strings.Contains(cmd, " worker")
		isBench := strings.Contains(cmd, "-workloads") || strings.Contains(cmd, "gocelery-bench")
		if (isWorker || isBench) && !strings.Contains(cmd, "go run") {
			if len(cmd) > 120 {
				cmd = cmd[:120]
			}
			out = append(out, fmt.Sprintf("pid %d: %s", pid, cmd))
		}
	}
	return out
}
