package protocol

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
)

// Compression header values as kombu writes them. kombu's "zlib" and "gzip"
// both mean a zlib stream under the header application/x-gzip.
const (
	CompressionZlib  = "application/x-gzip"
	CompressionBzip2 = "application/x-bz2"
)

// MaxDecompressedSize bounds a decompressed body so a small bomb cannot
// exhaust memory.
const MaxDecompressedSize = 512 << 20

// Decompress undoes a body's compression named by the compression header
// (kombu's content-type value or its short alias).
func Decompress(name string, body []byte) ([]byte, error) {
	var r io.Reader
	switch name {
	case CompressionZlib, "zlib", "gzip", "application/x-zlib":
		// kombu writes a zlib stream under the gzip name; accept real gzip
		// framing too, by its magic bytes.
		if len(body) >= 2 && body[0] == 0x1f && body[1] == 0x8b {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, &DecodeError{Reason: "bad gzip body", Err: err}
			}
			r = zr
		} else {
			zr, err := zlib.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, &DecodeError{Reason: "bad zlib body", Err: err}
			}
			r = zr
		}
	case CompressionBzip2, "bzip2", "bzip":
		r = bzip2.NewReader(bytes.NewReader(body))
	default:
		return nil, &DecodeError{Reason: fmt.Sprintf("unsupported compression %q", name), Err: ErrUnknownCompression}
	}
	out, err := io.ReadAll(io.LimitReader(r, MaxDecompressedSize+1))
	if err != nil {
		return nil, &DecodeError{Reason: fmt.Sprintf("cannot decompress %s body", name), Err: err}
	}
	if len(out) > MaxDecompressedSize {
		return nil, &DecodeError{Reason: "decompressed body is larger than 512 MiB"}
	}
	return out, nil
}

// Compress compresses body for the given compression: "zlib" or "gzip"
// (kombu's "gzip" is zlib data too). bzip2 is decode-only in Go's standard
// library, so it is not offered. It returns the header value to send.
func Compress(name string, body []byte) (header string, out []byte, err error) {
	switch name {
	case "", "none":
		return "", body, nil
	case "zlib", "gzip", CompressionZlib:
		var buf bytes.Buffer
		w := zlib.NewWriter(&buf)
		if _, err := w.Write(body); err != nil {
			return "", nil, err
		}
		if err := w.Close(); err != nil {
			return "", nil, err
		}
		return CompressionZlib, buf.Bytes(), nil
	}
	return "", nil, fmt.Errorf("protocol: compression %q: %w", name, ErrUnknownCompression)
}
