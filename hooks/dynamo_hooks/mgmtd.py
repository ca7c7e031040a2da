"""The 3FS mgmtd health probe: ask each mgmtd address for the primary mgmtd, in 3FS's own RPC over TCP.

The request is `Mgmtd.getPrimaryMgmtd` (service 217, method 1; `src/fbs/mgmtd/MgmtdServiceBase.h`,
`src/fbs/mgmtd/MgmtdServiceDef.h`), the call a 3FS client makes first (`src/client/mgmtd/MgmtdClient.cc`). mgmtd checks
only the cluster id (`src/mgmtd/ops/GetPrimaryMgmtdOperation.cc`, `MgmtdState::validateClusterId`), so no token is
needed. Types (`src/fbs/mgmtd/Rpc.h`, `PersistentNodeInfo.h`, `src/common/app/AppInfo.h`, `src/fbs/core/user/User.h`):

    GetPrimaryMgmtdReq  {String clusterId, UserInfo user}
    UserInfo            {u32 uid, u32 gid, vector<u32> groups, String token}
    GetPrimaryMgmtdRsp  {optional<PersistentNodeInfo> primary}
    PersistentNodeInfo  {u32 nodeId, u8 type, vector<ServiceGroupInfo> serviceGroups, vector<TagPair> tags,
                         String hostname}
    ServiceGroupInfo    {set<String> services, vector<Address> endpoints}
    TagPair             {String key, String value}
    Address             8 bytes: u32 ip (a.b.c.d as bytes a, b, c, d), u16 port, u16 type

An address whose type is RDMA is still a TCP listener on the same port (`src/common/net/Listener.cc` listens with a TCP
socket for every type, and `serde::Services::addService` registers an RDMA service for TCP too), so every address but
UNIX is probed over plain TCP.
"""

import concurrent.futures
import os
import random
import re
import socket
import time
import typing

from dynamo_hooks import serde
from dynamo_hooks.report import ERROR, OK, WARNING, Finding, Report

MGMTD_SERVICE_ID = 217
GET_PRIMARY_MGMTD = 1
ADDRESS_TYPES = ("TCP", "RDMA", "IPoIB", "LOCAL", "UNIX")  # enum net::Address::Type, src/common/utils/Address.h
NODE_TYPES = ("MGMTD", "META", "STORAGE", "CLIENT", "FUSE")  # enum flat::NodeType, src/fbs/mgmtd/MgmtdTypes.h
MAX_REPLY_SIZE = 4 * 1024 * 1024  # a getPrimaryMgmtd reply is a few hundred bytes
HEXDUMP_BYTES = 256

# Status codes, src/common/utils/StatusCodeDetails.h (names as StatusCode::toString gives them).
CLUSTER_ID_MISMATCH = 5003
STATUS_NAMES = {
    0: "OK", 1: "NotImplemented", 3: "InvalidArg", 4: "InvalidConfig", 25: "AuthenticationFail", 33: "InvalidFormat",
    999: "Unknown", 2002: "RPC::VerifyRequestFailed", 2005: "RPC::Timeout", 2008: "RPC::InvalidServiceID",
    2009: "RPC::InvalidMethodID", 2012: "RPC::RequestRefused", 5000: "Mgmtd::NotPrimary",
    5003: "Mgmtd::ClusterIdMismatch", 5016: "Mgmtd::NotAdmin",
}


# --- addresses (src/common/utils/Address.h) ----------------------------------------------------------------------

_IPV4_PORT = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})")


class Address(typing.NamedTuple):
    type: str
    ip: str
    port: int

    def __str__(self):
        return f"{self.type}://{self.ip}:{self.port}"


def _split_scheme(text):
    """`Address::fromString`: a known TYPE:// (any case) sets the type; anything else is parsed whole, as TCP."""
    scheme, sep, rest = text.partition("://")
    if sep:
        for name in ADDRESS_TYPES:
            if scheme.lower() == name.lower():
                return name, rest
    return "TCP", text


def parse_address(text):
    """'TYPE://a.b.c.d:port' (TYPE optional, default TCP) -> Address(type, ip, port), unpackable as a tuple.

    3FS reads addresses with `Address::from` and takes only a numeric IPv4 address; a hostname, an unknown type or an
    out-of-range number fails there with "invalid address: ...", and the zero address is refused as "Invalid MGMTD
    address" (`MgmtdClient::initMgmtds`). 3FS ignores trailing characters after the port; this parser does not.
    """
    text = text.strip()
    address_type, rest = _split_scheme(text)
    match = _IPV4_PORT.fullmatch(rest)
    numbers = [int(group) for group in match.groups()] if match else []
    if not match or any(octet > 255 for octet in numbers[:4]) or numbers[4] > 0xFFFF:
        raise ValueError(f"3FS would reject the address {text!r}: it takes TYPE://a.b.c.d:port with a numeric "
                         f"IPv4 address (no hostname), TYPE one of {', '.join(ADDRESS_TYPES)}")
    if numbers[4] == 0:
        raise ValueError(f"3FS would reject the address {text!r}: port 0")
    return Address(address_type, ".".join(map(str, numbers[:4])), numbers[4])


def read_address(reader):
    ip, port, type_ = reader.take(4), reader.u16(), reader.u16()
    type_name = ADDRESS_TYPES[type_] if type_ < len(ADDRESS_TYPES) else f"type{type_}"
    return f"{type_name}://{socket.inet_ntoa(ip)}:{port}"


# --- request and reply -------------------------------------------------------------------------------------------


def encode_request(cluster_id, uid, gid, groups=(), token=""):
    """GetPrimaryMgmtdReq {clusterId, UserInfo{uid, gid, groups, token}}."""
    user = serde.struct_body(serde.u32(uid), serde.u32(gid), serde.sequence(groups, serde.u32), serde.blob(token))
    return serde.struct_body(serde.blob(cluster_id), user)


def request_frame(uuid, cluster_id):
    """The whole request as sent: a framed MessagePacket carrying GetPrimaryMgmtdReq (flags = IsReq)."""
    payload = encode_request(cluster_id, os.getuid(), os.getgid())
    packet = serde.Packet(uuid=uuid, service_id=MGMTD_SERVICE_ID, method_id=GET_PRIMARY_MGMTD,
                          flags=serde.FLAG_IS_REQUEST, payload=payload)
    return serde.encode_frame(serde.encode_packet(packet))


def _read_service_group(reader):
    body = reader.table()
    return {"services": body.field(lambda r: r.sequence(serde.Reader.string), []),
            "endpoints": body.field(lambda r: r.sequence(read_address), [])}


def _read_tag(reader):
    body = reader.table()
    return body.field(serde.Reader.string, ""), body.field(serde.Reader.string, "")


def read_node_info(reader):
    """PersistentNodeInfo -> dict."""
    body = reader.table()
    node_id = body.field(serde.Reader.u32, 0)
    node_type = body.field(serde.Reader.u8, 0)
    groups = body.field(lambda r: r.sequence(_read_service_group), [])
    tags = body.field(lambda r: r.sequence(_read_tag), [])
    hostname = body.field(serde.Reader.string, "")
    return {"node_id": node_id, "hostname": hostname,
            "node_type": NODE_TYPES[node_type] if node_type < len(NODE_TYPES) else str(node_type),
            "addresses": [a for group in groups for a in group["endpoints"]],
            "services": sorted({s for group in groups for s in group["services"]}),
            "tags": {key: value for key, value in tags}}


def read_primary_rsp(reader):
    """GetPrimaryMgmtdRsp {optional<PersistentNodeInfo> primary} -> dict or None."""
    return reader.table().field(lambda r: r.optional(read_node_info))


def decode_reply(message, uuid):
    """A verified frame body -> serde.Result of the primary (dict or None); DecodeError when it does not fit."""
    packet = serde.decode_packet(message)
    if packet.is_request or (packet.service_id, packet.method_id) != (MGMTD_SERVICE_ID, GET_PRIMARY_MGMTD):
        raise serde.DecodeError(f"not a getPrimaryMgmtd reply (service {packet.service_id}, "
                                f"method {packet.method_id}, flags {packet.flags:#x})")
    if packet.uuid != uuid:
        raise serde.DecodeError(f"reply to another request (uuid {packet.uuid:#x}, sent {uuid:#x})")
    try:
        return serde.read_result(serde.Reader(packet.payload), read_primary_rsp)
    except serde.DecodeError as exc:
        raise serde.DecodeError(f"payload of {len(packet.payload)} bytes: {exc}") from exc


# --- the exchange, bounded by one deadline -----------------------------------------------------------------------


class ProbeFailure(Exception):
    """Why one peer did not give a usable answer: a reason code, a message and details for the Finding."""

    def __init__(self, reason, message, details=None, status=ERROR):
        super().__init__(message)
        self.reason, self.message, self.details, self.status = reason, message, details or {}, status


class Deadline:
    def __init__(self, timeout):
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def left(self, what):
        """Seconds left, for a socket timeout; ProbeFailure('timeout') once none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise ProbeFailure("timeout", f"{what} within {self.timeout:g}s")
        return left


def _connect(address, deadline):
    where = f"{address.ip}:{address.port}"
    try:
        return socket.create_connection((address.ip, address.port), timeout=deadline.left(f"no connection to {where}"))
    except TimeoutError as exc:
        raise ProbeFailure("timeout", f"no connection to {where} within {deadline.timeout:g}s") from exc
    except ConnectionRefusedError as exc:
        raise ProbeFailure("refused", f"connection to {where} refused (nothing listens there)") from exc
    except OSError as exc:
        raise ProbeFailure("unreachable", f"cannot connect to {where}: {exc.strerror or exc}") from exc


def _send(sock, frame, deadline):
    try:
        sock.settimeout(deadline.left("could not send the request"))
        sock.sendall(frame)
    except TimeoutError as exc:
        raise ProbeFailure("timeout", f"could not send the request within {deadline.timeout:g}s") from exc
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise ProbeFailure("closed", "the peer closed the connection before the request was sent") from exc


def _recv_exactly(sock, size, deadline, received=b""):
    """Read `size` more bytes; `received` is what came before, for the messages."""
    chunks, got = [], 0
    while got < size:
        try:
            sock.settimeout(deadline.left(_no_reply(received, chunks)))
            chunk = sock.recv(min(size - got, 65536))
        except TimeoutError as exc:
            raise ProbeFailure("timeout", f"{_no_reply(received, chunks)} within {deadline.timeout:g}s") from exc
        except ConnectionResetError as exc:
            raise ProbeFailure("closed", f"the peer reset the connection after {len(received) + got} reply bytes",
                               _dump(received + b"".join(chunks))) from exc
        if not chunk:
            raise ProbeFailure("closed", f"the peer closed the connection after {len(received) + got} reply bytes",
                               _dump(received + b"".join(chunks)))
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _no_reply(received, chunks):
    return "no complete reply" if received or chunks else "connected, but no reply"


def _dump(data):
    return {"received_bytes": len(data), "hexdump": data[:HEXDUMP_BYTES].hex(" ")} if data else {}


def _read_frame(sock, deadline):
    """Header, then body; ProbeFailure('not-3fs') when the bytes are not a 3FS frame. -> (checksum, body)."""
    header = _recv_exactly(sock, serde.HEADER.size, deadline)
    try:
        checksum, size = serde.parse_header(header, MAX_REPLY_SIZE)
    except serde.FrameError as exc:
        hint = " (it answers like an HTTP server)" if header.startswith(b"HTTP/") else ""
        raise ProbeFailure("not-3fs", f"the reply is not 3FS RPC{hint}: {exc}", _dump(header)) from exc
    body = _recv_exactly(sock, size, deadline, header)
    try:
        serde.verify_frame(checksum, body)
    except serde.FrameError as exc:
        raise ProbeFailure("not-3fs", f"the reply is not 3FS RPC: {exc}", _dump(header + body)) from exc
    return checksum, body


def exchange(address, frame, timeout):
    """Connect, send `frame`, read one reply frame, all within `timeout` seconds. -> (checksum, body)."""
    deadline = Deadline(timeout)
    with _connect(address, deadline) as sock:
        _send(sock, frame, deadline)
        return _read_frame(sock, deadline)


# --- findings ----------------------------------------------------------------------------------------------------


def _undecodable(body, why, strict):
    dump = body[:HEXDUMP_BYTES].hex(" ")
    more = f" (first {HEXDUMP_BYTES} of {len(body)} bytes)" if len(body) > HEXDUMP_BYTES else ""
    return ProbeFailure("undecodable", f"a 3FS frame (checksum ok) whose contents do not decode as a "
                                       f"getPrimaryMgmtd reply: {why}; bytes{more}: {dump}",
                        {"error": str(why), "received_bytes": len(body), "hexdump": dump},
                        ERROR if strict else WARNING)


def _decode(checksum, body, uuid, strict):
    if serde.is_compressed(checksum):
        raise _undecodable(body, "the reply is zstd-compressed, which the probe never asks for", strict)
    try:
        return decode_reply(body, uuid)
    except serde.DecodeError as exc:
        raise _undecodable(body, exc, strict) from exc


def _status_finding(peer, status, cluster_id):
    name = STATUS_NAMES.get(status.code, "UnknownStatusCode")
    details = {"code": status.code, "code_name": name, "status_message": status.message}
    text = f"{status.code} {name}" + (f": {status.message}" if status.message else "")
    if status.code == CLUSTER_ID_MISMATCH:
        return Finding(peer, ERROR, "wrong-cluster",
                       f"serves another 3FS cluster: it rejected cluster id {cluster_id!r} ({text})",
                       details | {"cluster_id": cluster_id})
    return Finding(peer, ERROR, "rpc-error", f"answered getPrimaryMgmtd with an error: {text}", details)


def _primary_finding(peer, primary):
    if primary is None:
        return Finding(peer, ERROR, "no-primary", "answers, but the cluster has no primary mgmtd")
    hostname = primary["hostname"] or "no hostname"
    return Finding(peer, OK, "ok", f"answers: the primary is node {primary['node_id']} ({hostname})",
                   primary)


def probe(peer, cluster_id, timeout, strict=False):
    """One address -> one Finding."""
    try:
        address = parse_address(peer)
    except ValueError as exc:
        return Finding(peer, ERROR, "invalid-address", str(exc))
    if address.type == "UNIX":
        return Finding(peer, ERROR, "invalid-address",
                       f"{peer} is a UNIX-domain address, local to the mgmtd host; give its TCP or RDMA address")
    uuid = random.getrandbits(64)
    try:
        checksum, body = exchange(address, request_frame(uuid, cluster_id), timeout)
        result = _decode(checksum, body, uuid, strict)
    except ProbeFailure as failure:
        return Finding(peer, failure.status, failure.reason, failure.message, failure.details)
    if result.error is not None:
        return _status_finding(peer, result.error, cluster_id)
    return _primary_finding(peer, result.value)


def check_mgmtd(addresses: list[str], cluster_id: str, timeout: float, strict: bool = False) -> Report:
    """Probe every mgmtd address at once; the check passes when any of them names a primary."""
    findings = []
    if addresses:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(addresses), 8)) as pool:
            findings = list(pool.map(lambda peer: probe(peer, cluster_id, timeout, strict), addresses))
    return Report(check="mgmtd", findings=findings, need="any")
