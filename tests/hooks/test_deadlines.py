"""A check's --timeout bounds the whole check, not each socket read: a peer that sends one byte at a time,
always within a read's timeout, never stretches a check far past it. The peers drip for 60 s or more; the
bound below is only as tight as a loaded machine allows."""

import time

import pytest

from dynamo_hooks import etcd, mgmtd, nats
from dynamo_hooks.report import ERROR
from testbed import servers
from tests.timing import SLACK

TIMEOUT = 1.0
BOUND = TIMEOUT + SLACK

# Plausible beginnings of each peer's answer, long enough to drip for a minute at 5 bytes a second.
ANSWERS = {
    "etcd": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n" + b"{" + b" " * 400,
    "nats": b"INFO {" + b'"server_id":"x",' * 30,
    "mgmtd": b"\x00" * 8 + b"\x01" * 400,
}


def run_check(name, port):
    if name == "etcd":
        return etcd.check_etcd([f"127.0.0.1:{port}"], TIMEOUT)
    if name == "nats":
        return nats.check_nats(f"nats://127.0.0.1:{port}", TIMEOUT)
    return mgmtd.check_mgmtd([f"TCP://127.0.0.1:{port}"], "ipoib", TIMEOUT)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_a_dripping_peer_is_a_timeout_within_the_deadline(name):
    with servers.dripping_listener(ANSWERS[name]) as port:
        started = time.monotonic()
        report = run_check(name, port)
        elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"{name} took {elapsed:.1f} s with --timeout {TIMEOUT:g}"
    # Read after the peer hung up: a reader still running past the deadline must not rewrite the report.
    time.sleep(0.2)
    assert not report.ok
    (finding,) = report.findings
    assert finding.status == ERROR and finding.reason == "timeout", finding
