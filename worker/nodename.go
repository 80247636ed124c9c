package worker

import (
	"os"
	"strconv"
	"strings"
)

// ExpandNodeName expands Celery's node name variables: %h (hostname with
// domain), %n (hostname without domain), %d (domain), %i and %I (process
// id), %% (a percent sign). A name without "@" gets "celery@" in front, as
// Celery does.
func ExpandNodeName(name, hostname string) string {
	if name == "" {
		name = "celery@%h"
	}
	short, domain, _ := strings.Cut(hostname, ".")
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '%' || i+1 == len(name) {
			b.WriteByte(c)
			continue
		}
		i++
		switch name[i] {
		case 'h':
			b.WriteString(hostname)
		case 'n':
			b.WriteString(short)
		case 'd':
			b.WriteString(domain)
		case 'i', 'I':
			b.WriteString(strconv.Itoa(os.Getpid()))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(name[i])
		}
	}
	out := b.String()
	if !strings.Contains(out, "@") {
		out = "celery@" + out
	}
	return out
}
