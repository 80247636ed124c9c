package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// pidfile is a --pidfile held by this process, with Celery's rules
// (celery.platforms.Pidfile): a file naming a running process refuses the
// start; a stale or broken one is replaced.
type pidfile struct {
	path string
	pid  int
}

// errPidfileLocked: the pid file names a process that is running.
type errPidfileLocked struct {
	path string
	pid  int
}

func (e *errPidfileLocked) Error() string {
	return fmt.Sprintf("pid file %s already exists and names a running process (pid %d): is the worker already running? Stop it, or give this one another --pidfile", e.path, e.pid)
}

// acquirePidfile writes our pid to path. stale is what it replaced, for
// the log ("" when there was no file).
func acquirePidfile(path string) (p *pidfile, stale string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("--pidfile %s: %w", path, err)
	}
	b, err := os.ReadFile(abs)
	switch {
	case err == nil:
		pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		switch {
		case perr != nil || pid <= 0:
			stale = "broken"
		// Our own pid is common in containers, where every worker is pid 1.
		case pid != os.Getpid() && processAlive(pid):
			return nil, "", &errPidfileLocked{abs, pid}
		default:
			stale = fmt.Sprintf("stale (pid %d is not running)", pid)
		}
		if err := os.Remove(abs); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, "", fmt.Errorf("--pidfile %s: remove the %s pid file: %w", abs, stale, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, "", fmt.Errorf("--pidfile %s: %w", abs, err)
	}
	// O_EXCL: of two workers starting at once with the same file, one fails.
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, "", fmt.Errorf("--pidfile %s: another process created it just now: is the worker already running?", abs)
		}
		return nil, "", fmt.Errorf("--pidfile %s: %w", abs, err)
	}
	pid := os.Getpid()
	_, err = fmt.Fprintf(f, "%d\n", pid)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(abs)
		return nil, "", fmt.Errorf("--pidfile %s: %w", abs, err)
	}
	return &pidfile{path: abs, pid: pid}, stale, nil
}

// release removes the file if it still holds our pid; a file another
// process has taken over since is left to it.
func (p *pidfile) release() {
	b, err := os.ReadFile(p.path)
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid == p.pid {
		_ = os.Remove(p.path)
	}
}
