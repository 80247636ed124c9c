// Package protocol owns Celery's wire format: it turns the parts of a broker
// delivery (properties, headers, body bytes) into one task Message and back,
// for message protocol v1 and v2, the json and msgpack serializers (with
// kombu's tagged JSON types), body compression and canvas signatures.
// It does no I/O.
package protocol
