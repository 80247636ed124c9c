"""Result backends other than a plain redis:// URL, each against both
workers: rediss:// (TLS, certificates checked) and sentinel:// lists. Each
test starts its own redis-server (and sentinel) on free loopback ports, so
the shared Redis is never touched."""
import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from conftest import make_app, wait_for


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_server_cert(d, ca):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=d)


class Server:
    """A redis-server (or sentinel) process of the test's own."""

    def __init__(self, d, name, args):
        self.log = open(os.path.join(d, f"{name}.log"), "wb")
        self.proc = subprocess.Popen(["redis-server", *args], stdout=self.log, stderr=subprocess.STDOUT, cwd=d)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def answers(port, *cmd, tls=None):
    args = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    if tls:
        args += ["--tls", "--cacert", tls]
    r = subprocess.run(args + list(cmd), capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() and "ERR" not in r.stdout and "refused" not in r.stdout


@pytest.fixture(scope="module")
def tls_redis():
    """A Redis that speaks only TLS, with a certificate from the test's CA."""
    d = tempfile.mkdtemp(prefix="gocelery-tls-")
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_server_cert(d, "ca")
    port = free_port()
    srv = Server(d, "redis-tls", ["--port", "0", "--tls-port", str(port), "--tls-cert-file", "server.pem",
                                  "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem",
                                  "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", d])
    wait_for(lambda: answers(port, "PING", tls=os.path.join(d, "ca.pem")), what="TLS redis up")
    yield {"port": port, "dir": d}
    srv.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def sentinel_redis():
    """A Redis master watched by one sentinel, master name gocelery-master."""
    d = tempfile.mkdtemp(prefix="gocelery-sentinel-")
    mport, sport = free_port(), free_port()
    master = Server(d, "master", ["--port", str(mport), "--save", "", "--appendonly", "no", "--dir", d])
    wait_for(lambda: answers(mport, "PING"), what="redis master up")
    conf = os.path.join(d, "sentinel.conf")
    with open(conf, "w") as f:
        f.write(f"port {sport}\nbind 127.0.0.1\ndir {d}\n"
                f"sentinel monitor gocelery-master 127.0.0.1 {mport} 1\n")
    sentinel = Server(d, "sentinel", [conf, "--sentinel"])
    wait_for(lambda: answers(sport, "SENTINEL", "get-master-addr-by-name", "gocelery-master"),
             what="sentinel knows the master")
    yield {"sentinel_port": sport, "master_port": mport}
    sentinel.stop()
    master.stop()
    shutil.rmtree(d, ignore_errors=True)


def round_trip(start_worker, kind, backend, transport_options=None):
    """Starts a worker of kind with backend and checks that Python reads
    what it stores: a value, and a failure."""
    env = {"CELERY_RESULT_BACKEND": backend}
    conf = {}
    if transport_options:
        env["CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"] = json.dumps(transport_options)
        conf["result_backend_transport_options"] = transport_options
    app = make_app("interop-backends", **conf)
    app.conf.result_backend = backend
    w = start_worker(kind, env=env, app=app)
    assert w.send("gocelery.add", [2, 3]).get(timeout=30) == 5
    r = w.send("gocelery.fail", ["ValueError", "boom"])
    with pytest.raises(ValueError, match="boom"):
        r.get(timeout=30)
    assert r.state == "FAILURE"
    return w


def test_rediss_backend_with_checked_certificate(start_worker, kind, tls_redis):
    ca = os.path.join(tls_redis["dir"], "ca.pem")
    url = f"rediss://127.0.0.1:{tls_redis['port']}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    round_trip(start_worker, kind, url)


def test_rediss_backend_refuses_a_certificate_it_cannot_check(start_worker, tls_redis):
    """gocelery ends at once, naming the backend setting; Python Celery
    retries the TLS handshake for ever (a certificate does not heal)."""
    other = os.path.join(tls_redis["dir"], "otherca.pem")
    url = f"rediss://127.0.0.1:{tls_redis['port']}/0?ssl_cert_reqs=required&ssl_ca_certs={other}"
    r = run_go_worker(url)
    assert r.returncode == 1, r.stdout
    assert "--result-backend (CELERY_RESULT_BACKEND)" in r.stdout and "certificate" in r.stdout, r.stdout


def test_rediss_backend_must_say_whether_certificates_are_checked(tls_redis):
    """As Celery requires, a rediss:// URL without ssl_cert_reqs is refused."""
    r = run_go_worker(f"rediss://127.0.0.1:{tls_redis['port']}/0")
    assert r.returncode == 1 and "ssl_cert_reqs" in r.stdout, r.stdout


def run_go_worker(backend, *args):
    binary = os.environ.get("GOCELERY_BIN")
    env = dict(os.environ, CELERY_RESULT_BACKEND=backend)
    if not binary:
        pytest.fail("GOCELERY_BIN is not set")
    return subprocess.run([binary, "worker", "-Q", "interop-backends-never", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def test_sentinel_backend(start_worker, kind, sentinel_redis):
    url = f"sentinel://127.0.0.1:{sentinel_redis['sentinel_port']}/2"
    w = round_trip(start_worker, kind, url, {"master_name": "gocelery-master"})
    # The result is on the master the sentinel named, not on the shared Redis.
    r = w.send("gocelery.add", [20, 22])
    assert r.get(timeout=30) == 42
    out = subprocess.run(["redis-cli", "-p", str(sentinel_redis["master_port"]), "-n", "2",
                          "EXISTS", f"celery-task-meta-{r.id}"], capture_output=True, text=True)
    assert out.stdout.strip() == "1"


def test_sentinel_backend_needs_a_master_name(sentinel_redis):
    r = run_go_worker(f"sentinel://127.0.0.1:{sentinel_redis['sentinel_port']}/2")
    assert r.returncode == 1 and "master_name" in r.stdout, r.stdout
