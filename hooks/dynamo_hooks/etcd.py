"""etcd health: GET /health on each endpoint, and the configured credentials through the v3 JSON gateway.

etcd answers /health with {"health": "true"} (HTTP 200) or {"health": "false", "reason": ...} (HTTP 503).
Credentials are checked with POST /v3/auth/authenticate (etcd 3.4+; 3.3 serves the gateway at /v3beta):
a token back means they work; "authentication is not enabled" (HTTP 412) means the server ignores them.
The check passes when at least one endpoint is healthy (and accepts the credentials).
"""

import http.client
import json
import ssl
import threading
import time
import urllib.error
import urllib.request

from dynamo_hooks.connections import KINDS, address_url
from dynamo_hooks.report import ERROR, OK, WARNING, Finding, Report

MAX_BODY = 64 * 1024
AUTH_PATHS = ("/v3/auth/authenticate", "/v3beta/auth/authenticate")
JOIN_GRACE = 0.5  # seconds past the timeout before an endpoint still busy is reported as timed out


class _Failure(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


def normalize(endpoint, tls=None):
    """`IP:PORT` -> http(s)://IP:PORT (https when a TLS context is given); URLs lose a trailing slash."""
    return address_url(endpoint, KINDS["etcd"].schemes[tls is not None])


def _opener(url, tls):
    # Proxies from the environment are ignored: endpoints are pod IPs reached directly.
    handlers = [urllib.request.ProxyHandler({})]
    if url.startswith("https://"):
        handlers.append(urllib.request.HTTPSHandler(context=tls or ssl.create_default_context()))
    return urllib.request.build_opener(*handlers)


def _classify(error):
    """(reason, text) for an exception raised while talking to an endpoint."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason if isinstance(error.reason, BaseException) else OSError(str(error.reason))
    if isinstance(error, ssl.SSLCertVerificationError) and "mismatch" in (error.verify_message or ""):
        return "tls", (f"TLS failure: {error.verify_message} Dynamo checks the address it connects to against the "
                       "certificate's names: add the pods' IPs to the server certificate's subjectAltName, or "
                       "give the endpoints by a name it carries")
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return "tls", f"TLS failure: {getattr(error, 'verify_message', None) or error}"
    if isinstance(error, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(error, TimeoutError):
        return "timeout", "no answer in time"
    if isinstance(error, http.client.HTTPException) and not isinstance(error, ConnectionError):
        return "not-etcd", f"not an HTTP answer: {_short(str(error))!r}"
    if isinstance(error, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "unreachable", f"connection reset ({error}); a TLS endpoint reached without TLS?"
    if isinstance(error, OSError):
        return "unreachable", f"unreachable: {error}"
    return "unreachable", f"unreachable: {error!r}"


def _request(opener, url, timeout, data=None):
    """(HTTP status, body text); HTTP error statuses are returned, not raised."""
    if timeout <= 0:
        raise TimeoutError("deadline passed")
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(MAX_BODY).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read(MAX_BODY).decode("utf-8", "replace")


def _json(body):
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _short(text, limit=200):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _health(opener, url, timeout):
    status, body = _request(opener, url + "/health", timeout)
    doc = _json(body)
    if doc is None or "health" not in doc:
        raise _Failure("not-etcd", f"/health answered HTTP {status} without etcd's health JSON: {_short(body)!r}")
    healthy = doc["health"] in ("true", True)
    if healthy and status == 200:
        return doc
    if not healthy:
        reason = doc.get("reason") or _short(body)
        raise _Failure("unhealthy", f"unhealthy (HTTP {status}): {reason}")
    raise _Failure("not-etcd", f"/health answered HTTP {status}: {_short(body)!r}")


def _authenticate(opener, url, credentials, timeout):
    """(status, reason, message) of authenticating with the credentials; the password is never shown."""
    user, password = credentials
    data = json.dumps({"name": user, "password": password}).encode()
    for path in AUTH_PATHS:
        status, body = _request(opener, url + path, timeout, data)
        if status == 404 and path != AUTH_PATHS[-1]:
            continue  # an etcd older than 3.4 serves the gateway under /v3beta only
        doc = _json(body) or {}
        text = doc.get("message") or doc.get("error") or _short(body)
        if status == 200 and doc.get("token"):
            return OK, "ok", f"healthy; user {user!r} authenticated"
        if "authentication is not enabled" in str(text):
            return WARNING, "auth-disabled", f"healthy, but credentials for user {user!r} are configured " \
                                             "and the server has authentication disabled"
        if "authentication failed" in str(text) or "invalid user" in str(text):
            return ERROR, "auth", f"authentication as user {user!r} failed: {text}"
        return ERROR, "auth", f"could not verify the credentials of user {user!r}: HTTP {status} {text}"
    raise AssertionError("unreachable")


def _check_endpoint(url, timeout, tls, credentials):
    deadline = time.monotonic() + timeout
    opener = _opener(url, tls)
    try:
        doc = _health(opener, url, timeout)
        details = {"health": doc.get("health")}
        if not credentials:
            return Finding(url, OK, "ok", "healthy", details)
        status, reason, message = _authenticate(opener, url, credentials, deadline - time.monotonic())
        return Finding(url, status, reason, message, {**details, "user": credentials[0]})
    except _Failure as e:
        return Finding(url, ERROR, e.reason, e.message)
    except Exception as e:  # noqa: BLE001 - every failure of one endpoint becomes its finding
        reason, message = _classify(e)
        return Finding(url, ERROR, reason, message)


def check_etcd(endpoints, timeout, tls=None, credentials=None):
    """Check every endpoint at once, each within `timeout` seconds; ok when at least one is healthy.
    `credentials` is (user, password): then an endpoint only counts when it also accepts them."""
    urls = [normalize(e, tls) for e in endpoints if e.strip()]
    answers = [None] * len(urls)

    def run(index, url):
        answers[index] = _check_endpoint(url, timeout, tls, credentials)

    # Daemon threads: a lookup or a peer that outlives every socket timeout cannot hold the caller (or its exit).
    threads = [threading.Thread(target=run, args=(i, u), daemon=True, name=f"etcd-check-{i}")
               for i, u in enumerate(urls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + JOIN_GRACE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    # A copy: a thread still running past the deadline writes into `answers`, never into the report.
    findings = [answer or Finding(url, ERROR, "timeout", f"no answer within {timeout:g}s")
                for answer, url in zip(list(answers), urls, strict=True)]
    return Report("etcd", findings, need="any")
