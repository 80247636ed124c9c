// Package redistls builds the TLS settings of a rediss:// connection from
// the ssl_* settings redis-py takes (ssl_cert_reqs, ssl_ca_certs,
// ssl_certfile, ssl_keyfile), for the Redis broker and the Redis result
// backend alike. What each requires of the settings (whether ssl_cert_reqs
// must be given, whether a key file may be left out) is the caller's.
package redistls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Settings are redis-py's TLS settings for one connection.
type Settings struct {
	ServerName string
	// CertReqs is "required" (also ""), "optional" or "none". For a
	// client, Python's CERT_OPTIONAL checks as CERT_REQUIRED does (servers
	// always send a certificate); "none" checks nothing.
	CertReqs string
	CACerts  string // PEM file of the CAs to trust (default: the system's)
	CertFile string // client certificate, with KeyFile
	KeyFile  string
}

// Config returns the client TLS configuration for s.
func Config(s Settings) (*tls.Config, error) {
	c := &tls.Config{ServerName: s.ServerName, MinVersion: tls.VersionTLS12}
	if s.CertReqs == "none" {
		c.InsecureSkipVerify = true
	}
	if s.CACerts != "" {
		pem, err := os.ReadFile(s.CACerts)
		if err != nil {
			return nil, fmt.Errorf("ssl_ca_certs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ssl_ca_certs %s: no PEM certificate in it", s.CACerts)
		}
		c.RootCAs = pool
	}
	if s.CertFile != "" || s.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("ssl_certfile/ssl_keyfile: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
