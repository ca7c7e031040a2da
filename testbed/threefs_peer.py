"""A stand-in 3FS mgmtd for tests: a threaded TCP server on 127.0.0.1 that speaks 3FS's RPC wire format.

Written from the 3FS definitions on its own (struct only, its own CRC32C), so that it checks the probe's encoder instead
of echoing it:

- frame (src/common/net/MessageHeader.h): `<u32 checksum, u32 size>` little-endian, then `size` bytes of packet;
  checksum = CRC32C (reflected, register from 0, no final inversion) of the packet, low byte set to 0x86;
- packet (src/common/serde/MessagePacket.h): struct {u64 uuid, u16 serviceId, u16 methodId, u16 flags,
  Version{u8, u8, u8, u32}, payload blob, optional<Timestamp{8 x i64}>}, a struct being varint body length + fields;
- reply payload (src/common/serde/Serde.h): Result<GetPrimaryMgmtdRsp> = bool, then the struct or
  Status{u16 code, optional<string> message}.

Modes: primary, no-primary, other-cluster, error, garbage, undecodable, silent, close. The peer compares the request's
cluster id with its own in the modes that answer, and replies Mgmtd::ClusterIdMismatch (5003) when they differ, as
mgmtd's `MgmtdState::validateClusterId` does; "other-cluster" is a peer whose own cluster id is another one.
"""

import os
import socket
import struct
import threading

MODES = ("primary", "no-primary", "other-cluster", "error", "garbage", "undecodable", "silent", "close")
SERVICE_MGMTD, METHOD_GET_PRIMARY = 217, 1
CLUSTER_ID_MISMATCH, REQUEST_REFUSED = 5003, 2012
TYPE_CODES = {"TCP": 0, "RDMA": 1, "IPoIB": 2, "LOCAL": 3, "UNIX": 4}
DEFAULT_NODE = {
    "node_id": 1,
    "node_type": 0,  # MGMTD
    "hostname": "mgmtd-0",
    "service_groups": [({"Core", "Mgmtd"}, [("RDMA", "10.1.2.3", 8000)]), ({"Mgmtd"}, [("TCP", "10.1.2.3", 9000)])],
    "tags": [("zone", "a"), ("traffic", "")],
}


class BadRequest(ValueError):
    pass


# --- encoding, from the definitions ------------------------------------------------------------------------------


def crc32c_raw(data):
    """Bit-at-a-time reflected CRC32C (poly 0x82F63B78) from 0, not inverted: folly::crc32c(data, size, 0)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc


def frame(packet_bytes, magic=0x86):
    checksum = (crc32c_raw(packet_bytes) & 0xFFFFFF00) | magic
    return struct.pack("<II", checksum, len(packet_bytes)) + packet_bytes


def varint(n):
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        out += struct.pack("B", low | (0x80 if n else 0))
        if not n:
            return out


def string(text):
    raw = text.encode() if isinstance(text, str) else text
    return varint(len(raw)) + raw


def table(*fields):
    body = b"".join(fields)
    return varint(len(body)) + body


def vector(items):
    return varint(len(items)) + b"".join(items)


def address(type_name, ip, port):
    return socket.inet_aton(ip) + struct.pack("<HH", port, TYPE_CODES[type_name])


def node_info(node):
    groups = [table(vector([string(s) for s in sorted(services)]), vector([address(*a) for a in endpoints]))
              for services, endpoints in node["service_groups"]]
    tags = [table(string(k), string(v)) for k, v in node["tags"]]
    return table(struct.pack("<IB", node["node_id"], node["node_type"]), vector(groups), vector(tags),
                 string(node["hostname"]))


def ok_payload(node):
    primary = b"\x00" if node is None else b"\x01" + node_info(node)
    return b"\x01" + table(primary)


def error_payload(code, message):
    return b"\x00" + struct.pack("<H", code) + (b"\x01" + string(message) if message else b"\x00")


def reply_packet(request, payload):
    """The reply MessagePacket: same uuid, ids and version, flags 0, timestamp echoed."""
    timestamp = b"\x00" if request["timestamp"] is None else b"\x01" + request["timestamp"]
    return table(struct.pack("<QHHH", request["uuid"], request["service_id"], request["method_id"], 0),
                 request["version"], string(payload), timestamp)


# --- decoding the request ----------------------------------------------------------------------------------------


class Cursor:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise BadRequest(f"short by {self.pos + n - len(self.data)} bytes")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def varint(self):
        value = shift = 0
        while True:
            (byte,) = self.unpack("B")
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def blob(self):
        return self.take(self.varint())

    def sub(self):
        return Cursor(self.blob())


def parse_request(data, checksum):
    """Checks the frame checksum and decodes MessagePacket + GetPrimaryMgmtdReq; BadRequest when anything is off."""
    if checksum != (crc32c_raw(data) & 0xFFFFFF00) | 0x86:
        raise BadRequest(f"checksum {checksum:#x} does not match")
    packet = Cursor(data).sub()
    uuid, service_id, method_id, flags = packet.unpack("<QHHH")
    version_body = packet.blob()
    payload = packet.sub().sub()  # the payload blob holds the request struct (itself length-prefixed)
    has_timestamp = packet.unpack("B")[0]
    timestamp = packet.blob() if has_timestamp else None
    if (service_id, method_id) != (SERVICE_MGMTD, METHOD_GET_PRIMARY) or not flags & 1:
        raise BadRequest(f"service {service_id} method {method_id} flags {flags:#x}")
    cluster_id = payload.blob().decode()
    user = payload.sub()
    uid, gid = user.unpack("<II")
    groups = [user.unpack("<I")[0] for _ in range(user.varint())]
    token = user.blob().decode()
    return {"uuid": uuid, "service_id": service_id, "method_id": method_id, "flags": flags,
            "version": string(version_body), "timestamp": None if timestamp is None else string(timestamp),
            "cluster_id": cluster_id, "uid": uid, "gid": gid, "groups": groups, "token": token}


# --- the server --------------------------------------------------------------------------------------------------


class ThreeFSPeer:
    """`with ThreeFSPeer("primary", cluster_id="c1") as peer:` listens on `host` (127.0.0.1 by default):`peer.port`
    until the block ends.

    `requests` holds every decoded request, `errors` every request that failed validation, `connections` the number
    of accepted connections.
    """

    def __init__(self, mode="primary", cluster_id="test-cluster", node=None, host="127.0.0.1"):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}, expected one of {MODES}")
        self.mode = mode
        self.cluster_id = "another-cluster" if mode == "other-cluster" else cluster_id
        self.node = node or DEFAULT_NODE
        self.requests, self.errors, self.connections = [], [], 0
        self._stop = threading.Event()
        self._threads, self._conns = [], []
        self._lock = threading.Lock()
        self._listener = None
        self.port = None
        self.host = host

    def address(self, scheme="TCP"):
        return f"{scheme}://{self.host}:{self.port}"

    def __enter__(self):
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=2)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                conn.close()

    def _spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            self._spawn(self._serve, conn)

    def _recv(self, conn, n):
        data = b""
        while len(data) < n and not self._stop.is_set():
            try:
                chunk = conn.recv(n - len(data))
            except TimeoutError:
                continue
            if not chunk:
                return None
            data += chunk
        return data if len(data) == n else None

    def _serve(self, conn):
        conn.settimeout(0.05)
        if self.mode == "close":
            conn.close()
            return
        try:
            request = self._read_request(conn)
            if request is not None:
                self._answer(conn, request)
        except OSError:
            return
        self._stop.wait()  # keep the connection open, as a quiet mgmtd would; closed on exit

    def _read_request(self, conn):
        header = self._recv(conn, 8)
        if header is None:
            return None
        checksum, size = struct.unpack("<II", header)
        body = self._recv(conn, size)
        try:
            if body is None:
                raise BadRequest("connection closed mid-request")
            request = parse_request(body, checksum)
        except (BadRequest, UnicodeDecodeError) as exc:
            self.errors.append(str(exc))
            return None
        self.requests.append(request)
        return request

    def _answer(self, conn, request):
        if self.mode == "silent":
            return
        conn.sendall(self.reply_bytes(request))

    def reply_bytes(self, request):
        if self.mode == "garbage":
            junk = bytearray(os.urandom(64))
            junk[0] = 0x47 if junk[0] & 0xFE == 0x86 else junk[0]
            return bytes(junk)
        if self.mode == "undecodable":
            return frame(reply_packet(request, b"\x01\x09\x01"))  # Result ok, a 9-byte struct with 1 byte in it
        if self.mode == "error":
            return frame(reply_packet(request, error_payload(REQUEST_REFUSED, "Refuse requests, stopped: true")))
        if request["cluster_id"] != self.cluster_id:
            return frame(reply_packet(request, error_payload(CLUSTER_ID_MISMATCH, "Cluster id mismatch")))
        return frame(reply_packet(request, ok_payload(None if self.mode == "no-primary" else self.node)))
