// Package protocol owns Celery's wire format: it turns the parts of a broker
// delivery (properties, headers, body bytes) into one task Message and back,
// for message protocol v1 and v2, the json and msgpack serializers (with
// kombu's tagged JSON types), body compression and canvas signatures.
// It does no I/O.
//
// JSON strings are kept as Python sent them: a lone surrogate ("\ud800")
// reaches Go as WTF-8 and is written back as the same escape, and a JSON
// body that is not UTF-8 is refused as kombu refuses it (wtf8.go,
// docs/hostile-input.md).
package protocol
