//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package worker

// rusage is what Celery's stats give where getrusage(2) is not supported.
func rusage() any { return "N/A" }
