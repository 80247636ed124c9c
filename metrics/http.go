package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves
//
//	/metrics  the Prometheus exposition (text or protobuf, as asked)
//	/healthz  200 while the process serves HTTP (liveness)
//	/readyz   200 while the broker connection is up and the result
//	          backend's last write succeeded, else 503; the JSON body says
//	          which is down (readiness)
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", m.serveReady)
	return mux
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready bool `json:"ready"`
	// "up" or "down"; "unknown" before Attach.
	Broker        string   `json:"broker"`
	ResultBackend string   `json:"result_backend"`
	Down          []string `json:"down,omitempty"` // what is down: "broker", "result_backend"
}

// Ready reads the worker's readiness.
func (m *Metrics) Ready() Readiness {
	src := m.source()
	if src == nil {
		return Readiness{Broker: "unknown", ResultBackend: "unknown", Down: []string{"worker"}}
	}
	s := src.Snapshot()
	r := Readiness{Ready: s.BrokerUp && s.BackendUp, Broker: "up", ResultBackend: "up"}
	if !s.BrokerUp {
		r.Broker = "down"
		r.Down = append(r.Down, "broker")
	}
	if !s.BackendUp {
		r.ResultBackend = "down"
		r.Down = append(r.Down, "result_backend")
	}
	return r
}

func (m *Metrics) serveReady(w http.ResponseWriter, _ *http.Request) {
	r := m.Ready()
	code := http.StatusOK
	if !r.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// Server is an HTTP server for Handler.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	err  error // from Serve, other than http.ErrServerClosed
}

// Listen binds addr (HOST:PORT; port 0 picks a free one) at once, so a
// port in use is an error here, and serves h in the background until
// Shutdown.
func Listen(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Addr is the address served, with the port chosen when it was 0.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops the server: requests in progress may finish until ctx
// ends, then connections are closed. It returns the error that stopped
// serving early, if one did.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	if s.err != nil {
		return s.err
	}
	return err
}
