"""NATS: the client protocol over a plain socket, bounded by one deadline.

The server speaks first with `INFO {json}`. When it requires TLS (or a TLS context is given) the client
upgrades the connection right after INFO; a server configured for a TLS handshake first sends nothing,
so with a TLS context a silent server is tried that way. Then CONNECT and PING must be answered by PONG.
JetStream is checked with a real request: `$JS.API.INFO` answers with the account info, an `error`
(JetStream not enabled for the account) or a "503 No Responders" status (no JetStream on the server).
"""

import importlib.metadata
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse

from dynamo_hooks import tls as tls_helpers
from dynamo_hooks.report import ERROR, OK, Finding, Report

DEFAULT_PORT = 4222
MAX_LINE = 1024 * 1024
MAX_PAYLOAD = 64 * 1024 * 1024
PROBE_AFTER = 2.0  # seconds a silent peer may take before it is probed
# With TLS, seconds a silent peer may take before the TLS handshake is tried: a server configured for a
# handshake first closes the connection once its TLS timeout (2 s by default) passes without one.
TLS_FIRST_AFTER = 0.5
CLIENT = {"name": "dynamo-hooks", "lang": "python", "version": importlib.metadata.version("dynamo-offloading-hooks")}
# OpenSSL reasons meaning the peer answered a ClientHello with something that is not TLS.
NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE",
           "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_RECORD", "RECORD_TOO_LARGE"}


class Failure(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_server(server):
    """nats://host:port, tls://host:port or host:port -> (scheme, host, port, credentials from the URL)."""
    text = server.strip()
    if "://" not in text:
        text = "nats://" + text
    url = urllib.parse.urlsplit(text)
    host = url.hostname
    if not host:
        raise ValueError(f"NATS server {server!r}: no host")
    credentials = (urllib.parse.unquote(url.username), urllib.parse.unquote(url.password or "")) \
        if url.username else None
    return url.scheme, host, url.port or DEFAULT_PORT, credentials


class Connection:
    """A socket with a read buffer; every operation gives up at the deadline."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.details = {}

    def remaining(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def send(self, data):
        self.sock.settimeout(self.remaining())
        self.sock.sendall(data)

    def fill(self, until=None):
        """Read more bytes (until `until`, a monotonic time, if given: TimeoutError after it)."""
        limit = self.remaining() if until is None else min(self.remaining(), until - time.monotonic())
        if limit <= 0:
            raise TimeoutError
        self.sock.settimeout(limit)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buffer += data

    def line(self):
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise Failure("not-nats", "protocol line too long")
            self.fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def exact(self, size):
        while len(self.buffer) < size + 2:
            self.fill()
        data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
        return data


def _resolve(host, port, conn):
    """getaddrinfo within the deadline (it has no timeout of its own): run in a daemon thread."""
    try:
        ipaddress.ip_address(host)
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except ValueError:
        pass
    result = []

    def lookup():
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            result.append(e)

    thread = threading.Thread(target=lookup, daemon=True, name="nats-resolve")
    thread.start()
    thread.join(conn.remaining())
    if not result:
        raise TimeoutError
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def _connect(host, port, conn):
    error = OSError(f"no address for {host}")
    for family, kind, proto, _, address in _resolve(host, port, conn):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(conn.remaining())
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
            if isinstance(e, TimeoutError):
                break
    raise error


def _first_bytes(conn, probe_at, probe):
    """Wait for the server to speak. A NATS server sends INFO at once; a peer still silent at `probe_at`
    gets a PING (when `probe`) so that a server of another protocol shows itself by answering or closing;
    without `probe`, TimeoutError at `probe_at`."""
    probed = False
    while len(conn.buffer) < 5 and b"\r\n" not in conn.buffer:
        try:
            conn.fill(until=None if probed else probe_at)
        except TimeoutError:
            if probed or not probe or time.monotonic() >= conn.deadline:
                raise
            conn.send(b"PING\r\n")
            probed = True
        except EOFError:
            if probed or conn.buffer:
                raise Failure("not-nats", "closed the connection without sending INFO"
                                          + (" (it refused a NATS PING; a NATS server wanting a TLS handshake "
                                             "first does that too)" if probed else "")) from None
            raise


def _info(conn, probe_at, probe=True):
    _first_bytes(conn, probe_at, probe)
    if not conn.buffer.startswith(b"INFO"):
        raise Failure("not-nats", f"the first line is not INFO: {conn.buffer[:60]!r}")
    line = conn.line()
    try:
        info = json.loads(line[4:].strip())
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise Failure("not-nats", f"INFO without a JSON object: {line[:80]!r}")
    return info


def _wrap(conn, context, host):
    conn.sock.settimeout(conn.remaining())
    conn.sock = context.wrap_socket(conn.sock, server_hostname=host, do_handshake_on_connect=False)
    conn.sock.do_handshake()


def _server_error(line):
    text = line[4:].strip().strip("'")
    lowered = text.lower()
    if "authorization" in lowered or "authentication" in lowered or "permissions" in lowered:
        return Failure("auth", f"server refused: {text}")
    if "tls" in lowered or "secure" in lowered:
        return Failure("tls", f"server refused: {text}")
    return Failure("closed", f"server error: {text}")


def _read_until(conn, want_pong, sid=None):
    """Read protocol lines until PONG (want_pong) or the message for `sid`; answers the server's PINGs."""
    while True:
        line = conn.line()
        op = line.split(" ", 1)[0].upper()
        if op == "PONG" and want_pong:
            return None
        if op == "PING":
            conn.send(b"PONG\r\n")
        elif op == "-ERR":
            raise _server_error(line)
        elif op in ("MSG", "HMSG"):
            args = line.split()
            try:
                header_size = int(args[-2]) if op == "HMSG" else 0
                size = int(args[-1])
            except (ValueError, IndexError):
                raise Failure("not-nats", f"malformed {op}: {line[:80]!r}") from None
            if len(args) < 4 or not 0 <= header_size <= size <= MAX_PAYLOAD:
                raise Failure("not-nats", f"malformed {op}: {line[:80]!r}")
            payload = conn.exact(size)
            if sid is not None and args[2] == sid:
                return payload[:header_size].decode("utf-8", "replace"), payload[header_size:]
        # INFO updates, +OK and PONGs not waited for are skipped


def _jetstream(conn):
    """(available, details, message) from a $JS.API.INFO request."""
    inbox = "_INBOX." + os.urandom(8).hex()
    conn.send(f"SUB {inbox} 1\r\nPUB $JS.API.INFO {inbox} 0\r\n\r\nPING\r\n".encode())
    headers, body = _read_until(conn, want_pong=False, sid="1")
    status = headers.split("\r\n", 1)[0].split()[1:2] if headers else []
    if status == ["503"]:
        return False, {}, "no responders for $JS.API.INFO: JetStream is not enabled on the server"
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return False, {}, f"$JS.API.INFO answered {body[:80]!r}{' ' + headers.strip() if headers else ''}"
    if doc.get("error"):
        error = doc["error"]
        text = error.get("description", error) if isinstance(error, dict) else error
        return False, {}, f"JetStream is not available: {text}"
    details = {"jetstream_streams": doc.get("streams"), "jetstream_api_level": (doc.get("api") or {}).get("level")}
    return True, details, "JetStream available"


def _grace(conn, after):
    """When to stop waiting for a silent peer to speak first: NATS sends INFO at once."""
    return time.monotonic() + min((conn.deadline - time.monotonic()) / 2, after)


def _exchange(conn, host, tls, credentials):
    """(JetStream available, message); facts about the server gather in conn.details."""
    details = conn.details
    secure = False
    try:
        info = _info(conn, _grace(conn, PROBE_AFTER if tls is None else TLS_FIRST_AFTER), probe=tls is None)
    except TimeoutError:
        if tls is None or time.monotonic() >= conn.deadline:
            raise
        # Silent: maybe a server that wants the TLS handshake first.
        try:
            _wrap(conn, tls, host)
        except ssl.SSLError as e:
            if isinstance(e, ssl.SSLEOFError) or getattr(e, "reason", None) in NOT_TLS:
                raise Failure("not-nats", f"sent no INFO and does not speak TLS ({e.reason or e})") from None
            raise
        except (EOFError, ConnectionResetError):
            raise Failure("not-nats", "sent no INFO and closed the connection on a TLS handshake") from None
        secure = True
        info = _info(conn, _grace(conn, PROBE_AFTER))
    details.update(server_id=info.get("server_id"), server_name=info.get("server_name"),
                   version=info.get("version"), jetstream=False)
    if not secure:
        offers_tls = info.get("tls_required") or info.get("tls_available")
        if tls is not None and not offers_tls:
            raise Failure("tls", "a TLS context is configured but the server does not offer TLS")
        if info.get("tls_required") or tls is not None:
            _wrap(conn, tls or tls_helpers.client_context(), host)
            secure = True
    details["tls"] = secure
    connect = {"verbose": False, "pedantic": False, "tls_required": secure, **CLIENT, "protocol": 1,
               "headers": True, "no_responders": True}
    if credentials:
        connect.update(user=credentials[0], **{"pass": credentials[1]})
    conn.send(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
    try:
        _read_until(conn, want_pong=True)
    except Failure as e:
        if e.reason == "auth":
            who = f"user {credentials[0]!r}" if credentials else "no credentials"
            e.message = f"authentication with {who} failed ({e.message})"
        raise
    except EOFError:
        if info.get("auth_required") and not credentials:
            raise Failure("auth", "the server requires authentication and no credentials are configured") from None
        raise
    available, js_details, message = _jetstream(conn)
    details.update(js_details, jetstream=available)
    return available, message


def check_nats(server, timeout, tls=None, credentials=None):
    """Connect to `server` (nats://, tls:// or host:port) within `timeout` seconds: INFO, TLS when required
    or configured, CONNECT (with `credentials` = (user, password)), PING -> PONG, then JetStream."""
    deadline = time.monotonic() + timeout
    try:
        scheme, host, port, url_credentials = parse_server(server)
    except ValueError as e:
        return Report("nats", [Finding(server, ERROR, "unreachable", str(e))])
    credentials = credentials or url_credentials
    if scheme == "tls" and tls is None:
        tls = tls_helpers.client_context()
    peer = f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"
    conn = Connection(None, deadline)
    try:
        conn.sock = _connect(host, port, conn)
        available, message = _exchange(conn, host, tls, credentials)
        version = conn.details.get("version")
        if not available:
            return Report("nats", [Finding(peer, ERROR, "no-jetstream", f"server {version}: {message}; "
                                                                        "Dynamo needs JetStream", conn.details)])
        return Report("nats", [Finding(peer, OK, "ok", f"server {version}, {message}", conn.details)])
    except Failure as e:
        reason, message = e.reason, e.message
    except ssl.SSLError as e:
        reason, message = "tls", f"TLS failure: {getattr(e, 'verify_message', None) or e}"
    except ssl.CertificateError as e:
        reason, message = "tls", f"TLS failure: {e}"
    except ConnectionRefusedError:
        reason, message = "refused", "connection refused"
    except TimeoutError:
        reason, message = "timeout", f"no complete answer within {timeout:g}s"
    except EOFError:
        reason, message = "closed", "the server closed the connection"
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as e:
        reason, message = "closed", f"the connection was closed: {e}"
    except OSError as e:
        reason, message = "unreachable", f"unreachable: {e}"
    finally:
        if conn.sock is not None:
            try:
                conn.sock.close()
            except OSError:
                pass
    return Report("nats", [Finding(peer, ERROR, reason, message, conn.details)])
