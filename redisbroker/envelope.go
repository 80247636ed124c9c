package redisbroker

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/celeryworker/gocelery/protocol"
)

// wireMessage is kombu's JSON envelope of one message.
type wireMessage struct {
	Body            string          `json:"body"`
	ContentEncoding string          `json:"content-encoding"`
	ContentType     string          `json:"content-type"`
	Headers         json.RawMessage `json:"headers"`
	Properties      wireProperties  `json:"properties"`
}

type wireProperties struct {
	CorrelationID string       `json:"correlation_id,omitempty"`
	ReplyTo       string       `json:"reply_to,omitempty"`
	DeliveryMode  json.Number  `json:"delivery_mode,omitempty"`
	DeliveryInfo  deliveryInfo `json:"delivery_info"`
	Priority      json.Number  `json:"priority"`
	BodyEncoding  string       `json:"body_encoding"`
	DeliveryTag   string       `json:"delivery_tag"`
	Expiration    string       `json:"expiration,omitempty"`
	Redelivered   bool         `json:"redelivered,omitempty"`
}

type deliveryInfo struct {
	Exchange    string `json:"exchange"`
	RoutingKey  string `json:"routing_key"`
	Redelivered bool   `json:"redelivered,omitempty"`
}

// encodeMessage lays out env as kombu's basic_publish does: body base64,
// body_encoding, a fresh delivery_tag, delivery_info naming where it was
// published.
func encodeMessage(env *protocol.Envelope, exchange, routingKey string) ([]byte, string, error) {
	tag := protocol.NewUUID()
	b := make([]byte, 0, 512+base64.StdEncoding.EncodedLen(len(env.Body)))
	b = append(b, `{"body": "`...)
	b = base64.StdEncoding.AppendEncode(b, env.Body)
	b = append(b, `", "content-encoding": `...)
	b = appendString(b, orDefault(env.ContentEncoding, "utf-8"))
	b = append(b, `, "content-type": `...)
	b = appendString(b, orDefault(env.ContentType, protocol.ContentTypeJSON))
	b = append(b, `, "headers": `...)
	if len(env.Headers) == 0 {
		b = append(b, "{}"...)
	} else {
		var err error
		if b, err = protocol.AppendJSON(b, env.Headers); err != nil {
			return nil, "", fmt.Errorf("redisbroker: encode headers: %w", err)
		}
	}
	b = append(b, `, "properties": {`...)
	if env.CorrelationID != "" {
		b = append(b, `"correlation_id": `...)
		b = appendString(b, env.CorrelationID)
		b = append(b, ", "...)
	}
	if env.ReplyTo != "" {
		b = append(b, `"reply_to": `...)
		b = appendString(b, env.ReplyTo)
		b = append(b, ", "...)
	}
	if env.Expiration != "" {
		b = append(b, `"expiration": `...)
		b = appendString(b, env.Expiration)
		b = append(b, ", "...)
	}
	mode := env.DeliveryMode
	if mode == 0 {
		mode = 2
	}
	b = append(b, `"delivery_mode": `...)
	b = strconv.AppendUint(b, uint64(mode), 10)
	b = append(b, `, "delivery_info": {"exchange": `...)
	b = appendString(b, exchange)
	b = append(b, `, "routing_key": `...)
	b = appendString(b, routingKey)
	b = append(b, `}, "priority": `...)
	b = strconv.AppendUint(b, uint64(env.Priority), 10)
	b = append(b, `, "body_encoding": "base64", "delivery_tag": `...)
	b = appendString(b, tag)
	b = append(b, "}}"...)
	return b, tag, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// decoded is a message read from a list or a channel.
type decoded struct {
	env  *protocol.Envelope
	tag  string
	info deliveryInfo
	pri  int
}

// decodeMessage reads kombu's envelope. Header values follow the protocol
// package's value model (JSON numbers as json.Number).
func decodeMessage(raw []byte) (*decoded, error) {
	var m wireMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("redisbroker: message is not kombu's JSON envelope: %w", err)
	}
	env := &protocol.Envelope{
		ContentType: m.ContentType, ContentEncoding: m.ContentEncoding,
		CorrelationID: m.Properties.CorrelationID, ReplyTo: m.Properties.ReplyTo,
		Expiration: m.Properties.Expiration,
	}
	if n, err := m.Properties.DeliveryMode.Int64(); err == nil && n > 0 && n < 256 {
		env.DeliveryMode = uint8(n)
	}
	pri := 0
	if n, err := m.Properties.Priority.Int64(); err == nil {
		pri = int(min(max(n, 0), 255))
		env.Priority = uint8(pri)
	}
	switch m.Properties.BodyEncoding {
	case "base64":
		body, err := base64.StdEncoding.DecodeString(m.Body)
		if err != nil {
			return nil, fmt.Errorf("redisbroker: message body: %w", err)
		}
		env.Body = body
	case "", "utf-8", "UTF-8":
		env.Body = []byte(m.Body)
	default:
		return nil, fmt.Errorf("redisbroker: message body_encoding %q is not supported", m.Properties.BodyEncoding)
	}
	if h := bytes.TrimSpace(m.Headers); len(h) > 0 && !bytes.Equal(h, []byte("null")) && !bytes.Equal(h, []byte("{}")) {
		v, err := protocol.DecodeJSON(h)
		if err != nil {
			return nil, fmt.Errorf("redisbroker: message headers: %w", err)
		}
		hm, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("redisbroker: message headers are not an object")
		}
		env.Headers = hm
	}
	info := m.Properties.DeliveryInfo
	info.Redelivered = info.Redelivered || m.Properties.Redelivered
	if r, ok := env.Headers["redelivered"].(bool); ok && r {
		info.Redelivered = true
	}
	return &decoded{env: env, tag: m.Properties.DeliveryTag, info: info, pri: pri}, nil
}

// markRedelivered sets headers.redelivered and
// properties.delivery_info.redelivered, as kombu does before putting a
// message back. The rest of the message is kept as it was.
func markRedelivered(raw []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	var headers map[string]json.RawMessage
	if h, ok := m["headers"]; ok {
		if err := json.Unmarshal(h, &headers); err != nil || headers == nil {
			headers = map[string]json.RawMessage{}
		}
		headers["redelivered"] = json.RawMessage("true")
		b, err := json.Marshal(headers)
		if err != nil {
			return nil, err
		}
		m["headers"] = b
	}
	var props map[string]json.RawMessage
	if err := json.Unmarshal(m["properties"], &props); err == nil && props != nil {
		var di map[string]json.RawMessage
		if err := json.Unmarshal(props["delivery_info"], &di); err == nil && di != nil {
			di["redelivered"] = json.RawMessage("true")
			props["delivery_info"], _ = json.Marshal(di)
			m["properties"], _ = json.Marshal(props)
		}
	}
	return json.Marshal(m)
}
