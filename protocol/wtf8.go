package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Strings that are not valid Unicode.
//
// Python's json.dumps writes a str holding a lone surrogate ('\ud800') as
// the escape "\ud800", and kombu's json reads it back as the same str.
// encoding/json turns it into U+FFFD, so a Go task would see, and send
// back, another value. DecodeJSON keeps it instead, as WTF-8: the Go string
// holds the surrogate's generalized UTF-8 sequence (U+D800 is the bytes
// ED A0 80), which utf8.ValidString reports as invalid and which
// MarshalJSON writes back as the escape "\ud800", so Python reads exactly
// the str it sent. A proper pair ("\ud83d\ude00") is one character, as in
// Python. Raw bytes that are not UTF-8 in a JSON body are an error, as in
// kombu (its json.loads decodes the body as UTF-8 first and raises
// DecodeError): such a message is rejected, not run with altered data.

// ErrNotUTF8: a JSON document holds bytes that are not UTF-8.
var ErrNotUTF8 = errors.New("JSON body is not UTF-8")

// wtf8Decoder reads one JSON value into the value model encoding/json
// with UseNumber gives (FuzzDecodeJSONWTF8 holds it to that), except that
// strings keep lone surrogates as WTF-8. Being made for this model alone
// it is also 2-3 times faster than encoding/json (docs/performance.md).
type wtf8Decoder struct {
	data []byte
	pos  int
}

func decodeJSONWTF8(data []byte) (any, error) {
	d := &wtf8Decoder{data: data}
	d.space()
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	d.space()
	if d.pos != len(d.data) {
		return nil, errors.New("trailing data after the value")
	}
	return v, nil
}

func (d *wtf8Decoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *wtf8Decoder) errorf(format string, a ...any) error {
	return fmt.Errorf("offset %d: %s", d.pos, fmt.Sprintf(format, a...))
}

func (d *wtf8Decoder) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("value nested too deeply")
	}
	if d.pos >= len(d.data) {
		return nil, d.errorf("unexpected end of JSON input")
	}
	switch c := d.data[d.pos]; {
	case c == '{':
		return d.object(depth)
	case c == '[':
		return d.array(depth)
	case c == '"':
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		return s, nil
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	default:
		return nil, d.errorf("invalid character %q looking for beginning of value", c)
	}
}

func (d *wtf8Decoder) literal(word string) error {
	if !bytes.HasPrefix(d.data[d.pos:], []byte(word)) {
		return d.errorf("invalid literal, want %s", word)
	}
	d.pos += len(word)
	return nil
}

func (d *wtf8Decoder) object(depth int) (any, error) {
	d.pos++ // {
	m := map[string]any{}
	d.space()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return m, nil
	}
	for {
		d.space()
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return nil, d.errorf("object key must be a string")
		}
		k, err := d.str()
		if err != nil {
			return nil, err
		}
		d.space()
		if d.pos >= len(d.data) || d.data[d.pos] != ':' {
			return nil, d.errorf("want ':' after object key")
		}
		d.pos++
		d.space()
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		m[k] = v
		if done, err := d.more('}'); done || err != nil {
			return m, err
		}
	}
}

// knownString returns b as a string, without allocating for the keys
// every task message's embed carries.
func knownString(b []byte) string {
	switch string(b) { // compared without a conversion
	case "callbacks":
		return "callbacks"
	case "errbacks":
		return "errbacks"
	case "chain":
		return "chain"
	case "chord":
		return "chord"
	case "":
		return ""
	}
	return string(b)
}

// emptyArray is every decoded []: boxed once, and nothing can write to a
// slice of length and capacity 0.
var emptyArray any = []any{}

func (d *wtf8Decoder) array(depth int) (any, error) {
	d.pos++ // [
	d.space()
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
		return emptyArray, nil
	}
	// Elements gather on the stack; the result is allocated once, at its
	// size (task arguments are short lists).
	var buf [8]any
	a := buf[:0]
	for {
		d.space()
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		if done, err := d.more(']'); done || err != nil {
			if err != nil {
				return nil, err
			}
			out := make([]any, len(a))
			copy(out, a)
			return out, nil
		}
	}
}

// more reads the "," before the next element or the closing bracket
// (done).
func (d *wtf8Decoder) more(closing byte) (done bool, err error) {
	d.space()
	if d.pos >= len(d.data) {
		return false, d.errorf("unexpected end of JSON input")
	}
	switch d.data[d.pos] {
	case ',':
		d.pos++
		return false, nil
	case closing:
		d.pos++
		return true, nil
	}
	return false, d.errorf("want ',' or '%c'", closing)
}

// number reads JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *wtf8Decoder) number() (any, error) {
	start := d.pos
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	bad := func() (any, error) { return nil, d.errorf("invalid number %q", d.data[start:d.pos]) }
	if d.data[d.pos] == '-' {
		d.pos++
	}
	if d.pos < len(d.data) && d.data[d.pos] == '0' {
		d.pos++
	} else if digits() == 0 {
		return bad()
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		if digits() == 0 {
			return bad()
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return bad()
		}
	}
	return json.Number(d.data[start:d.pos]), nil
}

// str reads a string; the input is known to be UTF-8.
func (d *wtf8Decoder) str() (string, error) {
	d.pos++ // opening quote
	var b []byte
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			var s string
			if b == nil {
				s = knownString(d.data[start:d.pos])
			} else {
				s = string(append(b, d.data[start:d.pos]...))
			}
			d.pos++
			return s, nil
		case c < 0x20:
			return "", d.errorf("invalid control character %q in string", c)
		case c != '\\':
			d.pos++
			continue
		}
		b = append(b, d.data[start:d.pos]...)
		if d.pos+1 >= len(d.data) {
			break
		}
		esc := d.data[d.pos+1]
		d.pos += 2
		switch esc {
		case '"', '\\', '/':
			b = append(b, esc)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", d.errorf("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) && r < 0xdc00 {
				// A high surrogate followed by a low one is one character.
				if save := d.pos; d.pos+1 < len(d.data) && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
					d.pos += 2
					if lo, ok := d.hex4(); ok && lo >= 0xdc00 && lo <= 0xdfff {
						b = utf8.AppendRune(b, utf16.DecodeRune(r, lo))
						break
					}
					d.pos = save
				}
			}
			b = appendWTF8(b, r)
		default:
			return "", d.errorf("invalid escape '\\%c' in string", esc)
		}
		start = d.pos
	}
	return "", d.errorf("unexpected end of JSON input in string")
}

func (d *wtf8Decoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(d.data[d.pos:d.pos+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	d.pos += 4
	return rune(n), true
}

// appendWTF8 appends r as generalized UTF-8: surrogates get the 3-byte
// sequence UTF-8 forbids (utf8.AppendRune would write U+FFFD).
func appendWTF8(b []byte, r rune) []byte {
	if utf16.IsSurrogate(r) {
		return append(b, 0xe0|byte(r>>12), 0x80|byte(r>>6)&0x3f, 0x80|byte(r)&0x3f)
	}
	return utf8.AppendRune(b, r)
}

// surrogateAt returns the surrogate whose WTF-8 sequence starts s, if
// one does (ED A0..BF 80..BF).
func surrogateAt(s string) (rune, bool) {
	if len(s) < 3 || s[0] != 0xed || s[1] < 0xa0 || s[1] > 0xbf || s[2] < 0x80 || s[2] > 0xbf {
		return 0, false
	}
	return 0xd000 | rune(s[1]&0x3f)<<6 | rune(s[2]&0x3f), true
}
