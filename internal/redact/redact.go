// Package redact hides credentials in broker and backend URLs. It is the one
// redactor used for the banner, logs, errors and inspect replies, so a
// password is hidden the same way everywhere, whatever characters it holds.
package redact

import "strings"

// Mask replaces a password.
const Mask = "****"

// URL returns raw with the password of every URL in it hidden (Celery's
// ";"-separated failover lists included). It does not parse the URL the
// way net/url does: people write passwords with unencoded "@", "/", "#",
// ":" or "%", so the credentials are taken to run from "://" to the last
// "@" before the next URL.
func URL(raw string) string {
	if !strings.Contains(raw, "@") {
		return raw
	}
	parts := strings.Split(raw, ";")
	for i, p := range parts {
		parts[i] = one(p)
	}
	return strings.Join(parts, ";")
}

func one(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		// Not a URL with an authority; still hide "user:pass@" if present.
		scheme, rest = "", raw
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	prefix := ""
	if ok {
		prefix = scheme + "://"
	}
	if !hasPass {
		// A lone userinfo may itself be a token (redis://token@host).
		if strings.ContainsAny(user, "/#%?") || len(user) > 32 {
			return prefix + Mask + rest[at:]
		}
		return raw
	}
	return prefix + user + ":" + Mask + rest[at:]
}

// Error returns err with every occurrence of raw (and of its parts, which
// URL parsers quote in their messages) replaced by the redacted form, so
// an error about a URL never carries its password. The result still
// matches the original with errors.Is and errors.As.
func Error(err error, raw string) error {
	if err == nil {
		return nil
	}
	msg := String(err.Error(), raw)
	if msg == err.Error() {
		return err
	}
	return &redacted{msg: msg, err: err}
}

// String replaces raw and its secrets in s.
func String(s, raw string) string {
	red := URL(raw)
	if red == raw {
		return s
	}
	s = strings.ReplaceAll(s, raw, red)
	// Parsers quote the URL as they read it: with its credentials escaped.
	for _, p := range strings.Split(raw, ";") {
		if esc := EscapeUserinfo(p); esc != p {
			s = strings.ReplaceAll(s, esc, one(p))
		}
	}
	for _, secret := range secrets(raw) {
		if len(secret) >= 3 {
			s = strings.ReplaceAll(s, secret, Mask)
		}
	}
	return s
}

// secrets lists the password of each URL in raw, and the fragments a
// parser that cuts at "@", "/", "#" or "%" would quote from it.
func secrets(raw string) []string {
	var out []string
	for _, p := range strings.Split(raw, ";") {
		_, rest, ok := strings.Cut(p, "://")
		if !ok {
			rest = p
		}
		at := strings.LastIndexByte(rest, '@')
		if at < 0 {
			continue
		}
		_, pass, hasPass := strings.Cut(rest[:at], ":")
		if !hasPass {
			continue
		}
		out = append(out, pass)
		var b strings.Builder
		if escapeInto(&b, pass); b.String() != pass {
			out = append(out, b.String())
		}
		for _, sep := range []string{"@", "/", "#", "?", "%"} {
			if i := strings.Index(pass, sep); i > 0 {
				out = append(out, pass[:i], pass[i+1:])
			}
		}
	}
	// Longest first so a fragment never spoils a longer match.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && len(out[j]) > len(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }

// Unwrap keeps errors.Is/As working; the wrapped error's own text is not
// shown by this one.
func (r *redacted) Unwrap() error { return r.err }

// EscapeUserinfo returns the URL raw (one URL, not a list) with its user
// name and password percent-encoded, so a URL parser reads the
// credentials people write unencoded ("p@ss#w/rd%") as the password they
// mean instead of cutting it at the first "@", "#" or "/" and taking the
// rest for a host. The credentials run from "://" to the last "@", the
// same rule URL and String use to hide them. A valid "%XX" escape is kept
// (the password was encoded already, as kombu also reads it); every other
// byte outside RFC 3986's unreserved set is escaped.
func EscapeUserinfo(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return raw
	}
	user, pass, hasPass := strings.Cut(rest[:at], ":")
	var b strings.Builder
	b.Grow(len(raw) + 16)
	b.WriteString(scheme)
	b.WriteString("://")
	escapeInto(&b, user)
	if hasPass {
		b.WriteByte(':')
		escapeInto(&b, pass)
	}
	b.WriteString(rest[at:])
	return b.String()
}

func escapeInto(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case unreserved(c):
			b.WriteByte(c)
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteString(s[i : i+3])
			i += 2
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
