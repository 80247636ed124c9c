//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package worker

import "syscall"

// rusage is getrusage(2) of this process in the fields and units of
// Celery's stats (Python's resource module: times in seconds, the rest as
// the kernel gives them, maxrss in KiB on Linux and bytes on macOS).
func rusage() any {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return "N/A"
	}
	sec := func(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
	return map[string]any{
		"utime": sec(r.Utime), "stime": sec(r.Stime),
		"maxrss": int64(r.Maxrss), "ixrss": int64(r.Ixrss), "idrss": int64(r.Idrss), "isrss": int64(r.Isrss),
		"minflt": int64(r.Minflt), "majflt": int64(r.Majflt), "nswap": int64(r.Nswap),
		"inblock": int64(r.Inblock), "oublock": int64(r.Oublock),
		"msgsnd": int64(r.Msgsnd), "msgrcv": int64(r.Msgrcv), "nsignals": int64(r.Nsignals),
		"nvcsw": int64(r.Nvcsw), "nivcsw": int64(r.Nivcsw),
	}
}
