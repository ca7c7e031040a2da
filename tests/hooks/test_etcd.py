"""check_etcd against real etcd 3.4 servers (Debian's /usr/bin/etcd) on 127.0.0.1."""

import json
import time

import pytest

from dynamo_hooks import tls
from dynamo_hooks.etcd import check_etcd, normalize
from dynamo_hooks.report import ERROR, OK, WARNING
from testbed import servers
from tests.timing import SLACK

TIMEOUT = 3.0
PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def etcd_tls(tmp_path_factory, certs):
    with servers.etcd_server(tmp_path_factory.mktemp("etcd-tls"), tls=certs) as server:
        yield server


@pytest.fixture(scope="module")
def etcd_auth(tmp_path_factory):
    with servers.etcd_server(tmp_path_factory.mktemp("etcd-auth")) as server:
        servers.enable_etcd_auth(server, "root", PASSWORD)
        yield server


def one(report):
    assert report.check == "etcd" and report.need == "any"
    assert len(report.findings) == 1
    return report.findings[0]


# --- healthy ------------------------------------------------------------------------------------------------------


def test_health_json_of_etcd_34(etcd):
    # What the check relies on: etcd 3.4 answers with the string "true".
    assert etcd.health() == {"health": "true"}


def test_healthy_endpoint(etcd):
    report = check_etcd([etcd.url], TIMEOUT)
    finding = one(report)
    assert report.ok
    assert (finding.peer, finding.status, finding.reason) == (etcd.url, OK, "ok")
    assert finding.details == {"health": "true"}
    assert report.summary() == f"etcd: ok ({etcd.url})"
    json.dumps(report.as_dict())


def test_bare_address_becomes_http(etcd):
    finding = one(check_etcd([etcd.address], TIMEOUT))
    assert finding.peer == f"http://{etcd.address}" and finding.status == OK


def test_host_name_endpoint(etcd):
    assert check_etcd([f"localhost:{etcd.port}"], TIMEOUT).ok


def test_normalize():
    assert normalize("10.0.0.1:2379") == "http://10.0.0.1:2379"
    assert normalize("10.0.0.1:2379", tls=object()) == "https://10.0.0.1:2379"
    assert normalize("https://10.0.0.1:2379/") == "https://10.0.0.1:2379"
    assert normalize(" http://[fd00::1]:2379 ") == "http://[fd00::1]:2379"


def test_no_endpoint_fails():
    report = check_etcd([], TIMEOUT)
    assert not report.ok and report.findings == []


# --- unreachable, stopped, silent, unhealthy ----------------------------------------------------------------------


def test_stopped_server_is_refused(tmp_path):
    with servers.etcd_server(tmp_path) as server:
        assert one(check_etcd([server.url], TIMEOUT)).status == OK
    report = check_etcd([server.url], TIMEOUT)
    finding = one(report)
    assert not report.ok
    assert (finding.status, finding.reason) == (ERROR, "refused")
    assert report.summary() == f"etcd {server.url}: connection refused"


def test_one_of_two_endpoints_down(etcd):
    down = f"http://127.0.0.1:{servers.free_port()}"
    report = check_etcd([down, etcd.url], TIMEOUT)
    assert report.ok
    assert [(f.peer, f.status, f.reason) for f in report.findings] == [(down, ERROR, "refused"), (etcd.url, OK, "ok")]
    assert report.errors() == [report.findings[0]]


def test_all_endpoints_down():
    downs = [f"127.0.0.1:{servers.free_port()}" for _ in range(2)]
    report = check_etcd(downs, TIMEOUT)
    assert not report.ok and {f.reason for f in report.findings} == {"refused"}


def test_silent_listener_times_out_in_time(etcd):
    timeout = 1.0
    with servers.silent_listener() as port, servers.silent_listener() as port2:
        start = time.monotonic()
        report = check_etcd([f"127.0.0.1:{port}", f"127.0.0.1:{port2}", etcd.url], timeout)
        elapsed = time.monotonic() - start
    assert [f.reason for f in report.findings] == ["timeout", "timeout", "ok"]
    assert report.ok
    # endpoints are checked at once: two silent ones cost one timeout, not two
    assert elapsed < timeout + SLACK


def test_unhealthy_member_of_a_cluster_without_leader(tmp_path):
    with servers.etcd_cluster(tmp_path, names=("a", "b")) as (a, b):
        b.stop()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            report = check_etcd([a.url, b.url], TIMEOUT)
            if report.findings[0].reason == "unhealthy":
                break
            time.sleep(0.1)
    assert not report.ok
    first, second = report.findings
    assert (first.status, first.reason) == (ERROR, "unhealthy")
    assert "HTTP 503" in first.message and "false" in first.message
    assert second.reason == "refused"


def test_http_server_that_is_not_etcd():
    with servers.http_server(body=b"<html>hello</html>", content_type="text/html") as port:
        finding = one(check_etcd([f"127.0.0.1:{port}"], TIMEOUT))
    assert (finding.status, finding.reason) == (ERROR, "not-etcd")
    assert "hello" in finding.message


def test_other_http_status_is_not_etcd():
    with servers.http_server(status=404, body=b"404 page not found") as port:
        finding = one(check_etcd([f"127.0.0.1:{port}"], TIMEOUT))
    assert finding.reason == "not-etcd" and "404" in finding.message


def test_bool_health_is_accepted():
    with servers.http_server(body=b'{"health": true}', content_type="application/json") as port:
        assert one(check_etcd([f"127.0.0.1:{port}"], TIMEOUT)).status == OK


# --- TLS ----------------------------------------------------------------------------------------------------------


def test_tls_with_client_certificate(etcd_tls, certs):
    report = check_etcd([etcd_tls.address], TIMEOUT, tls=certs.client_context())
    finding = one(report)
    assert report.ok and finding.peer == etcd_tls.url and finding.reason == "ok"


def test_tls_from_pem_content(etcd_tls, certs):
    pem = {name: open(getattr(certs, attr)).read()
           for name, attr in (("ca", "ca"), ("cert", "client_cert"), ("key", "client_key"))}
    assert one(check_etcd([etcd_tls.url], TIMEOUT, tls=tls.client_context(**pem))).status == OK


def test_tls_without_the_right_ca(etcd_tls, certs, other_certs):
    wrong_ca = tls.client_context(other_certs.ca, certs.client_cert, certs.client_key)
    system_cas = tls.client_context(None, certs.client_cert, certs.client_key)
    for context in (wrong_ca, system_cas):
        finding = one(check_etcd([etcd_tls.url], TIMEOUT, tls=context))
        assert (finding.status, finding.reason) == (ERROR, "tls")
        assert "certificate" in finding.message


def test_tls_certificate_not_naming_the_address(tmp_path, etcd_tls, certs):
    """A hostNetwork worker reaches etcd by pod IP, and Dynamo's client checks that IP against the server
    certificate's names: so does the check, instead of passing a setup the worker cannot use."""
    only_a_name = servers.make_certs(tmp_path / "by-name", server_names="DNS:etcd-headless.baseten.svc")
    with servers.etcd_server(tmp_path / "etcd", tls=only_a_name) as server:
        finding = one(check_etcd([server.url], TIMEOUT, tls=only_a_name.client_context()))
    assert (finding.status, finding.reason) == (ERROR, "tls")
    assert finding.message == (
        "TLS failure: IP address mismatch, certificate is not valid for '127.0.0.1'. Dynamo checks the address it "
        "connects to against the certificate's names: add the pods' IPs to the server certificate's "
        "subjectAltName, or give the endpoints by a name it carries")
    # The certificate of the module's server names 127.0.0.1: accepted.
    assert one(check_etcd([etcd_tls.url], TIMEOUT, tls=certs.client_context())).status == OK


def test_tls_without_client_certificate(etcd_tls, certs):
    finding = one(check_etcd([etcd_tls.url], TIMEOUT, tls=certs.client_context(client_cert=False)))
    assert (finding.status, finding.reason) == (ERROR, "tls")


def test_https_endpoint_without_tls_context_uses_system_cas(etcd_tls):
    finding = one(check_etcd([etcd_tls.url], TIMEOUT))
    assert finding.reason == "tls"


def test_plain_http_to_a_tls_endpoint_fails(etcd_tls):
    finding = one(check_etcd([etcd_tls.url.replace("https://", "http://")], TIMEOUT))
    assert finding.status == ERROR and finding.reason in ("unreachable", "not-etcd")


# --- credentials --------------------------------------------------------------------------------------------------


def test_auth_gateway_answers_of_etcd_34(etcd, etcd_auth):
    # The v3 JSON gateway is served at /v3 by etcd 3.4; without auth enabled it refuses with code 9 (HTTP 412).
    status, answer = etcd.post("/v3/auth/authenticate", {"name": "root", "password": "x"})
    assert status == 412 and "authentication is not enabled" in answer["error"]
    status, answer = etcd_auth.post("/v3/auth/authenticate", {"name": "root", "password": PASSWORD})
    assert status == 200 and answer["token"]
    status, answer = etcd_auth.post("/v3/auth/authenticate", {"name": "root", "password": "wrong"})
    assert status == 400 and "authentication failed" in answer["error"]


def test_right_credentials(etcd_auth):
    report = check_etcd([etcd_auth.url], TIMEOUT, credentials=("root", PASSWORD))
    finding = one(report)
    assert report.ok and (finding.status, finding.reason) == (OK, "ok")
    assert "root" in finding.message and PASSWORD not in finding.message
    assert finding.details["user"] == "root"


def test_wrong_password(etcd_auth):
    report = check_etcd([etcd_auth.url], TIMEOUT, credentials=("root", "not-the-password"))
    finding = one(report)
    assert not report.ok
    assert (finding.status, finding.reason) == (ERROR, "auth")
    assert "'root'" in finding.message and "not-the-password" not in finding.message
    assert "not-the-password" not in json.dumps(report.as_dict())


def test_unknown_user(etcd_auth):
    finding = one(check_etcd([etcd_auth.url], TIMEOUT, credentials=("nobody", PASSWORD)))
    assert finding.reason == "auth" and "nobody" in finding.message and PASSWORD not in finding.message


def test_health_without_credentials_on_an_auth_server(etcd_auth):
    assert one(check_etcd([etcd_auth.url], TIMEOUT)).status == OK


def test_credentials_for_a_server_without_auth_warn(etcd):
    report = check_etcd([etcd.url], TIMEOUT, credentials=("root", PASSWORD))
    finding = one(report)
    assert report.ok
    assert (finding.status, finding.reason) == (WARNING, "auth-disabled")
    assert "root" in finding.message and PASSWORD not in finding.message
    assert report.warnings() == [finding]


def test_credentials_are_checked_on_healthy_endpoints_only(etcd_auth):
    down = f"http://127.0.0.1:{servers.free_port()}"
    report = check_etcd([down, etcd_auth.url], TIMEOUT, credentials=("root", "wrong"))
    assert not report.ok
    assert [f.reason for f in report.findings] == ["refused", "auth"]
