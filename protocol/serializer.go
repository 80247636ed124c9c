package protocol

import (
	"fmt"
	"strings"
)

// Content types of kombu's serializers.
const (
	ContentTypeJSON    = "application/json"
	ContentTypeMsgpack = "application/x-msgpack"
	ContentTypeYAML    = "application/x-yaml"
	ContentTypePickle  = "application/x-python-serialize"
)

// SerializerName maps a content type to kombu's serializer name.
func SerializerName(contentType string) string {
	switch normalizeContentType(contentType) {
	case ContentTypeJSON:
		return "json"
	case ContentTypeMsgpack, "application/msgpack", "application/x-msgpack-binary":
		return "msgpack"
	case ContentTypeYAML:
		return "yaml"
	case ContentTypePickle:
		return "pickle"
	}
	return ""
}

// ContentType returns the content type and encoding for a serializer name.
func ContentType(serializer string) (contentType, encoding string, err error) {
	switch serializer {
	case "", "json":
		return ContentTypeJSON, "utf-8", nil
	case "msgpack":
		return ContentTypeMsgpack, "binary", nil
	}
	return "", "", fmt.Errorf("protocol: serializer %q: %w", serializer, ErrUnknownContentType)
}

func normalizeContentType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// DefaultAccept is Celery's default accept_content plus msgpack, which the
// worker can decode safely.
var DefaultAccept = []string{"json", "msgpack"}

// Unmarshal decodes a body with the serializer its content type names,
// refusing serializers not in accept (names or content types).
func Unmarshal(contentType string, body []byte, accept []string) (any, error) {
	name := SerializerName(contentType)
	if name == "" {
		return nil, &DecodeError{Reason: fmt.Sprintf("content type %q", contentType), Err: ErrUnknownContentType}
	}
	if !accepted(name, accept) {
		return nil, &DecodeError{Reason: fmt.Sprintf("refusing to deserialize content type %s (%s): it is not in the accept list %v", name, contentType, accept), Err: ErrNotAccepted}
	}
	switch name {
	case "json":
		return DecodeJSON(body)
	case "msgpack":
		return DecodeMsgpack(body)
	}
	return nil, &DecodeError{Reason: fmt.Sprintf("serializer %s is not supported by gocelery", name), Err: ErrUnknownContentType}
}

// Marshal encodes v with the named serializer.
func Marshal(serializer string, v any) ([]byte, error) {
	switch serializer {
	case "", "json":
		return MarshalJSON(v)
	case "msgpack":
		return MarshalMsgpack(v)
	}
	return nil, fmt.Errorf("protocol: serializer %q: %w", serializer, ErrUnknownContentType)
}

func accepted(name string, accept []string) bool {
	if accept == nil {
		accept = DefaultAccept
	}
	for _, a := range accept {
		if a == name || SerializerName(a) == name {
			return true
		}
	}
	return false
}
