import os
import socket
import threading
import time

import pytest

from dynamo_hooks import mgmtd, serde
from dynamo_hooks.report import ERROR, OK, WARNING
from testbed.threefs_peer import ThreeFSPeer, crc32c_raw
from tests.timing import SLACK

CLUSTER = "test-cluster"
TIMEOUT = 2.0


def probe_one(address, cluster_id=CLUSTER, timeout=TIMEOUT, strict=False):
    report = mgmtd.check_mgmtd([address], cluster_id, timeout, strict=strict)
    assert report.check == "mgmtd" and report.need == "any" and len(report.findings) == 1
    return report, report.findings[0]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- serde primitives against bytes worked out from the 3FS definitions -----------------------------------------


def test_varint_matches_serde_varint():
    assert serde.varint(0) == b"\x00"
    assert serde.varint(127) == b"\x7f"
    assert serde.varint(128) == b"\x80\x01"
    assert serde.varint(300) == b"\xac\x02"
    assert serde.varint(2**32 - 1) == b"\xff\xff\xff\xff\x0f"
    for value in (0, 1, 127, 128, 300, 16383, 16384, 2**32 - 1, 2**64 - 1):
        assert serde.Reader(serde.varint(value)).varint() == value


def test_crc32c():
    assert serde.crc32c(b"123456789") == 0xE3069283
    assert serde.crc32c(b"") == 0
    # 3FS starts the register at 0 and does not invert it (folly::crc32c(data, size, 0)).
    assert serde.crc32c_update(b"123456789", 0) == crc32c_raw(b"123456789")
    assert serde.crc32c_update(b"", 0) == 0


def test_serde_checksum_low_byte():
    message = b"\x05hello"
    crc = crc32c_raw(message)
    assert serde.serde_checksum(message) == (crc & 0xFFFFFF00) | 0x86
    assert serde.serde_checksum(message, compressed=True) == (crc & 0xFFFFFF00) | 0x87


def test_strings_optionals_sequences_structs():
    assert serde.blob("abc") == b"\x03abc"
    assert serde.optional(None, serde.u32) == b"\x00"
    assert serde.optional(7, serde.u32) == b"\x01\x07\x00\x00\x00"
    assert serde.sequence([1, 2], serde.u16) == b"\x02\x01\x00\x02\x00"
    assert serde.struct_body(serde.u8(1), serde.blob("x")) == b"\x03\x01\x01x"
    # Status{u16 code, optional<String> message}
    assert serde.read_status(serde.Reader(b"\x8b\x13\x01\x13Cluster id mismatch")) == \
        serde.Status(5003, "Cluster id mismatch")
    assert serde.read_status(serde.Reader(b"\xd9\x07\x00")) == serde.Status(2009, "")


def test_reader_round_trip_and_short_input():
    reader = serde.Reader(serde.struct_body(serde.u64(2**63), serde.blob("héllo"), serde.optional(None, serde.u8)))
    body = reader.table()
    assert (body.u64(), body.string(), body.optional(serde.Reader.u8)) == (2**63, "héllo", None)
    assert body.field(serde.Reader.u32, 42) == 42  # missing trailing field keeps its default
    with pytest.raises(serde.DecodeError):
        serde.Reader(b"\x05ab").blob()
    with pytest.raises(serde.DecodeError):
        serde.Reader(b"\x80").varint()


def test_packet_round_trip():
    packet = serde.Packet(uuid=0x1122334455667788, service_id=217, method_id=1, flags=1, payload=b"\x00",
                          timestamp=tuple(range(8)))
    encoded = serde.encode_packet(packet)
    # struct {u64, u16, u16, u16, Version{7 bytes}, blob(1), optional<Timestamp{64 bytes}>}
    assert encoded[0] == 8 + 2 + 2 + 2 + 8 + 2 + 1 + 1 + 64
    assert encoded[1:9] == bytes.fromhex("8877665544332211")
    assert encoded[9:15] == b"\xd9\x00\x01\x00\x01\x00"
    assert encoded[15:23] == b"\x07" + b"\x00" * 7
    assert serde.decode_packet(encoded) == packet


def test_frame_header_checks():
    message = serde.encode_packet(serde.Packet(uuid=1, service_id=217, method_id=1))
    frame = serde.encode_frame(message)
    checksum, size = serde.parse_header(frame[:8])
    assert size == len(message)
    serde.verify_frame(checksum, frame[8:])
    with pytest.raises(serde.FrameError):
        serde.verify_frame(checksum, frame[8:-1] + b"\xff")
    with pytest.raises(serde.FrameError):
        serde.parse_header(b"HTTP/1.1")
    with pytest.raises(serde.FrameError):
        serde.parse_header(b"\x86\x00\x00\x00\x00\x00\x00\x20")  # 512 MiB


def test_request_encoding():
    payload = mgmtd.encode_request("c1", uid=1000, gid=100)
    user = b"\x0a" + b"\xe8\x03\x00\x00" + b"\x64\x00\x00\x00" + b"\x00" + b"\x00"
    assert payload == bytes([len(user) + 3]) + b"\x02c1" + user


# --- addresses ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("RDMA://10.0.0.1:8000", ("RDMA", "10.0.0.1", 8000)),
    ("rdma://10.0.0.1:8000", ("RDMA", "10.0.0.1", 8000)),
    ("tcp://192.168.1.1:9000", ("TCP", "192.168.1.1", 9000)),
    ("ipoib://192.168.1.1:8000", ("IPoIB", "192.168.1.1", 8000)),
    ("Local://127.0.0.1:1", ("LOCAL", "127.0.0.1", 1)),
    ("10.0.0.2:8000", ("TCP", "10.0.0.2", 8000)),
])
def test_parse_address(text, expected):
    assert mgmtd.parse_address(text) == expected


@pytest.mark.parametrize("text", [
    "RDMA://mgmtd.3fs.svc:8000", "mgmtd:8000", "HTTP://10.0.0.1:8000", "RDMA://10.0.0.256:8000",
    "RDMA://10.0.0.1:70000", "RDMA://10.0.0.1", "RDMA://10.0.0.1:0", "",
])
def test_parse_address_rejects(text):
    with pytest.raises(ValueError, match="3FS would reject the address"):
        mgmtd.parse_address(text)


def test_address_decoding():
    """`net::Address` as serde copies it: the four IPv4 bytes in order, u16 port, u16 type."""
    encoded = bytes([10, 1, 2, 3]) + b"\x40\x1f" + b"\x01\x00"
    assert mgmtd.read_address(serde.Reader(encoded)) == "RDMA://10.1.2.3:8000"


def test_invalid_address_makes_no_connection(monkeypatch):
    def no_connect(*args, **kwargs):
        raise AssertionError("connected for an invalid address")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    report, finding = probe_one("RDMA://mgmtd-0.mgmtd:8000")
    assert (finding.status, finding.reason) == (ERROR, "invalid-address")
    assert "3FS would reject the address" in finding.message and "numeric IPv4" in finding.message
    assert not report.ok


# --- the probe against a peer in each mode -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["TCP", "RDMA", "ipoib"])
def test_primary(scheme):
    with ThreeFSPeer("primary", cluster_id=CLUSTER) as peer:
        report, finding = probe_one(peer.address(scheme))
    assert report.ok
    assert (finding.status, finding.reason) == (OK, "ok")
    # What a user reads: the peer once, then what it said.
    assert finding.line("mgmtd") == f"mgmtd {peer.address(scheme)}: answers: the primary is node 1 (mgmtd-0)"
    assert finding.details["node_id"] == 1 and finding.details["hostname"] == "mgmtd-0"
    assert finding.details["node_type"] == "MGMTD"
    assert finding.details["addresses"] == ["RDMA://10.1.2.3:8000", "TCP://10.1.2.3:9000"]
    assert finding.details["services"] == ["Core", "Mgmtd"]
    assert finding.details["tags"] == {"zone": "a", "traffic": ""}
    (request,) = peer.requests
    assert not peer.errors
    assert request["cluster_id"] == CLUSTER and request["token"] == "" and request["groups"] == []
    assert (request["uid"], request["gid"]) == (os.getuid(), os.getgid())


def test_no_primary():
    with ThreeFSPeer("no-primary", cluster_id=CLUSTER) as peer:
        report, finding = probe_one(peer.address())
    assert (finding.status, finding.reason) == (ERROR, "no-primary")
    assert "no primary" in finding.message
    assert not report.ok


def test_other_cluster():
    with ThreeFSPeer("other-cluster") as peer:
        report, finding = probe_one(peer.address(), cluster_id="prod-a")
    assert (finding.status, finding.reason) == (ERROR, "wrong-cluster")
    assert "'prod-a'" in finding.message and "5003" in finding.message and "Cluster id mismatch" in finding.message
    assert finding.details["code"] == 5003
    assert peer.requests[0]["cluster_id"] == "prod-a"


def test_cluster_id_is_compared():
    with ThreeFSPeer("primary", cluster_id="prod-b") as peer:
        _, finding = probe_one(peer.address(), cluster_id="prod-a")
    assert finding.reason == "wrong-cluster"


def test_rpc_error():
    with ThreeFSPeer("error") as peer:
        _, finding = probe_one(peer.address())
    assert (finding.status, finding.reason) == (ERROR, "rpc-error")
    assert "2012" in finding.message and "RequestRefused" in finding.message and "Refuse requests" in finding.message
    assert finding.details["code"] == 2012


def test_garbage_is_not_3fs():
    with ThreeFSPeer("garbage") as peer:
        _, finding = probe_one(peer.address())
    assert (finding.status, finding.reason) == (ERROR, "not-3fs")
    assert "not 3FS" in finding.message and finding.line("mgmtd").startswith(f"mgmtd {peer.address()}: ")
    assert peer.address() not in finding.message
    assert finding.details["received_bytes"] == 8


def test_http_server_is_not_3fs():
    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer():
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        _, finding = probe_one(f"TCP://127.0.0.1:{server.getsockname()[1]}")
        thread.join(timeout=2)
    assert (finding.status, finding.reason) == (ERROR, "not-3fs")
    assert "HTTP" in finding.message


def test_undecodable_is_a_warning():
    with ThreeFSPeer("undecodable") as peer:
        report, finding = probe_one(peer.address())
    assert (finding.status, finding.reason) == (WARNING, "undecodable")
    assert finding.details["hexdump"] and finding.details["hexdump"] in finding.message
    assert report.ok  # a warning does not fail the check


def test_undecodable_is_an_error_when_strict():
    with ThreeFSPeer("undecodable") as peer:
        report, finding = probe_one(peer.address(), strict=True)
    assert (finding.status, finding.reason) == (ERROR, "undecodable")
    assert not report.ok


def test_closed():
    with ThreeFSPeer("close") as peer:
        _, finding = probe_one(peer.address())
    assert (finding.status, finding.reason) == (ERROR, "closed")
    assert finding.line("mgmtd").startswith(f"mgmtd {peer.address()}: ") and peer.address() not in finding.message


def test_silent_peer_times_out_within_bound():
    timeout = 0.5
    with ThreeFSPeer("silent") as peer:
        start = time.monotonic()
        _, finding = probe_one(peer.address(), timeout=timeout)
        elapsed = time.monotonic() - start
    assert (finding.status, finding.reason) == (ERROR, "timeout")
    assert "no reply" in finding.message and "0.5s" in finding.message
    assert elapsed < timeout + SLACK
    assert len(peer.requests) == 1  # the request arrived and was valid


def test_refused():
    _, finding = probe_one(f"TCP://127.0.0.1:{free_port()}")
    assert (finding.status, finding.reason) == (ERROR, "refused")
    assert "refused" in finding.message


def test_unix_address_is_not_probed():
    _, finding = probe_one("UNIX://1.0.0.0:1234")
    assert finding.reason == "invalid-address"


def test_one_down_one_answering():
    down = f"RDMA://127.0.0.1:{free_port()}"
    with ThreeFSPeer("primary") as peer:
        report = mgmtd.check_mgmtd([down, peer.address("RDMA")], CLUSTER, TIMEOUT)
    assert report.ok
    by_peer = {f.peer: f for f in report.findings}
    assert by_peer[down].reason == "refused" and by_peer[down].status == ERROR
    assert by_peer[peer.address("RDMA")].reason == "ok"
    assert [f.peer for f in report.findings] == [down, peer.address("RDMA")]


def test_silent_and_answering_together_within_bound():
    timeout = 0.5
    with ThreeFSPeer("silent") as quiet, ThreeFSPeer("primary") as good:
        start = time.monotonic()
        report = mgmtd.check_mgmtd([quiet.address(), good.address()], CLUSTER, timeout)
        elapsed = time.monotonic() - start
    assert report.ok and [f.reason for f in report.findings] == ["timeout", "ok"]
    assert elapsed < timeout + SLACK


def test_no_addresses():
    report = mgmtd.check_mgmtd([], CLUSTER, TIMEOUT)
    assert not report.ok and report.summary() == "mgmtd: no peer to check"


def test_peer_shutdown_is_quick():
    start = time.monotonic()
    with ThreeFSPeer("silent") as peer:
        probe_one(peer.address(), timeout=0.2)
    assert time.monotonic() - start < 0.2 + SLACK
