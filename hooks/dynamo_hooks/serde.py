"""3FS serde: the binary encoding of 3FS RPC messages, and the TCP frame that carries them.

Everything here follows the 3FS sources (deepseek-ai/3FS):

- `src/common/serde/Serde.h`: the binary `Out`/`In` and `serialize`/`deserialize`. 3FS writes downwards (each value
  is prepended), so a length or flag that the C++ emits *after* its content lands *before* it on the wire. On the
  wire, then:
    * integers, enums, bools and "serde copyable" types (StrongTypedef, `net::Address`): fixed width, little-endian;
    * lengths and counts: varint (7 bits a byte, low group first, high bit = more);
    * strings and blobs: varint length, then the bytes;
    * `std::optional`: one byte (0 = empty, 1 = value, `enum class Optional`), then the value;
    * `std::vector` / `std::set`: varint count, then the items in order;
    * structs (`SERDE_STRUCT_FIELD`): varint length of the body, then the fields in declaration order; fields missing
      at the end of a body keep their defaults, bytes left over are ignored;
    * `Result<T>`: one bool (1 = value), then T or a `Status`;
    * `Status`: u16 code (`status_code_t`), then optional<string> message.
- `src/common/serde/MessagePacket.h`: the packet `{u64 uuid, u16 serviceId, u16 methodId, u16 flags,
  Version{u8 major, u8 minor, u8 patch, u32 hash}, payload blob, optional<Timestamp{8 x i64}>}`, itself a struct.
- `src/common/net/MessageHeader.h`, `src/common/net/WriteItem.h`, `src/common/net/Processor.h`: the frame, an 8-byte
  header `{u32 checksum, u32 size}` (little-endian) followed by `size` bytes of packet. The checksum is CRC32C
  (`folly::crc32c(data, size, 0)`: reflected Castagnoli, register starting at 0, no final inversion) of the packet,
  with its low byte replaced by 0x86, or 0x87 when the packet is zstd-compressed. A frame whose checksum low byte is
  not 0x86/0x87 is not a serde message; a size of 512 MiB or more is refused.
"""

import dataclasses
import struct

# --- errors ------------------------------------------------------------------------------------------------------


class FrameError(ValueError):
    """The bytes are not a 3FS frame (wrong magic, absurd size, checksum mismatch)."""


class DecodeError(ValueError):
    """A frame's contents do not decode as the serde type expected."""


# --- CRC32C (src/common/net/MessageHeader.h, Checksum::calcSerde) ------------------------------------------------

CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli 0x1EDC6F41, bit-reversed


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CRC32C_POLYNOMIAL if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c_update(data, register=0):
    """Feed `data` through the reflected CRC32C register, with no inversion on entry or exit (folly::crc32c)."""
    crc = register & 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def crc32c(data):
    """The standard CRC-32C (iSCSI, RFC 3720): register starts at ~0 and is inverted at the end."""
    return crc32c_update(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


# --- fixed-width integers and varints (src/common/serde/Serde.h) -------------------------------------------------

_FIXED = {"u8": struct.Struct("<B"), "u16": struct.Struct("<H"), "u32": struct.Struct("<I"),
          "u64": struct.Struct("<Q"), "i64": struct.Struct("<q")}


def u8(value):
    return _FIXED["u8"].pack(value)


def u16(value):
    return _FIXED["u16"].pack(value)


def u32(value):
    return _FIXED["u32"].pack(value)


def u64(value):
    return _FIXED["u64"].pack(value)


def i64(value):
    return _FIXED["i64"].pack(value)


def boolean(value):
    return u8(1 if value else 0)


def varint(value):
    """LEB128-style varint as `SerdeMethod<Varint64>::serialize` writes it (Varint32 gives the same bytes)."""
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# --- strings, optionals, sequences, structs (src/common/serde/Serde.h) -------------------------------------------


def blob(data):
    """A string or blob: varint length, then the bytes (`Out::value(std::string_view)`)."""
    data = data.encode() if isinstance(data, str) else bytes(data)
    return varint(len(data)) + data


def optional(value, encode):
    """`std::optional<T>`: 0, or 1 followed by T."""
    return u8(0) if value is None else u8(1) + encode(value)


def sequence(items, encode):
    """`std::vector<T>` / `std::set<T>`: varint count, then each item."""
    items = list(items)
    return varint(len(items)) + b"".join(encode(item) for item in items)


def struct_body(*fields):
    """A struct (`SERDE_STRUCT_FIELD`s): varint length of the encoded fields, then the fields."""
    body = b"".join(fields)
    return varint(len(body)) + body


# --- reading -----------------------------------------------------------------------------------------------------


class Reader:
    """Reads serde values from the front of a byte string; every shortfall raises DecodeError."""

    def __init__(self, data):
        self._data = memoryview(bytes(data))
        self._pos = 0

    def empty(self):
        return self._pos >= len(self._data)

    def remaining(self):
        return len(self._data) - self._pos

    def take(self, size):
        if size > self.remaining():
            raise DecodeError(f"needs {size} bytes at offset {self._pos}, {self.remaining()} left")
        chunk = bytes(self._data[self._pos:self._pos + size])
        self._pos += size
        return chunk

    def fixed(self, kind):
        codec = _FIXED[kind]
        return codec.unpack(self.take(codec.size))[0]

    def u8(self):
        return self.fixed("u8")

    def u16(self):
        return self.fixed("u16")

    def u32(self):
        return self.fixed("u32")

    def u64(self):
        return self.fixed("u64")

    def i64(self):
        return self.fixed("i64")

    def boolean(self):
        value = self.u8()
        if value > 1:
            raise DecodeError(f"bool byte {value:#x} at offset {self._pos - 1}")
        return value == 1

    def varint(self):
        """`SerdeMethod<Varint64>::deserialize`: at most 10 bytes, 64 bits."""
        value = 0
        for shift in range(0, 64, 7):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise DecodeError("varint longer than 64 bits")

    def blob(self):
        return self.take(self.varint())

    def string(self):
        return self.blob().decode("utf-8", errors="backslashreplace")

    def optional(self, read):
        """0 = empty, 1 = value. 3FS reads any other byte as empty; here it is an error, as no encoder writes it."""
        flag = self.u8()
        if flag > 1:
            raise DecodeError(f"optional flag {flag:#x} at offset {self._pos - 1}")
        return read(self) if flag else None

    def sequence(self, read):
        count = self.varint()
        if count > self.remaining():
            raise DecodeError(f"sequence of {count} items in {self.remaining()} bytes")
        return [read(self) for _ in range(count)]

    def table(self):
        """A struct body as its own Reader (`In::parseTable`)."""
        return Reader(self.blob())

    def field(self, read, default=None):
        """One struct field; a body that ended early leaves the remaining fields at their defaults."""
        return default if self.empty() else read(self)


# --- Result and Status (src/common/serde/Serde.h, src/common/utils/Status.h) -------------------------------------


@dataclasses.dataclass
class Status:
    code: int
    message: str = ""


@dataclasses.dataclass
class Result:
    """`Result<T>`: a value, or a Status when the call failed."""

    value: object = None
    error: Status | None = None


def read_status(reader):
    code = reader.u16()
    message = reader.optional(Reader.string)
    return Status(code, message or "")


def read_result(reader, read_value):
    if reader.boolean():
        return Result(value=read_value(reader))
    return Result(error=read_status(reader))


# --- MessagePacket (src/common/serde/MessagePacket.h) -------------------------------------------------------------

FLAG_IS_REQUEST = 1 << 0


@dataclasses.dataclass
class Packet:
    uuid: int
    service_id: int
    method_id: int
    flags: int = 0
    version: tuple = (0, 0, 0, 0)  # major, minor, patch, hash; 3FS clients leave it at zero
    payload: bytes = b""
    timestamp: tuple | None = None  # eight i64 microsecond stamps, when the sender asked for them

    @property
    def is_request(self):
        return bool(self.flags & FLAG_IS_REQUEST)


def encode_version(version):
    major, minor, patch, hash_ = version
    return struct_body(u8(major), u8(minor), u8(patch), u32(hash_))


def encode_packet(packet):
    timestamp = optional(packet.timestamp, lambda stamps: struct_body(*(i64(s) for s in stamps)))
    return struct_body(u64(packet.uuid), u16(packet.service_id), u16(packet.method_id), u16(packet.flags),
                       encode_version(packet.version), blob(packet.payload), timestamp)


def _read_version(reader):
    body = reader.table()
    return (body.field(Reader.u8, 0), body.field(Reader.u8, 0), body.field(Reader.u8, 0), body.field(Reader.u32, 0))


def _read_timestamp(reader):
    body = reader.table()
    return tuple(body.field(Reader.i64, 0) for _ in range(8))


def decode_packet(message):
    """A whole frame body -> Packet."""
    body = Reader(message).table()
    return Packet(uuid=body.field(Reader.u64, 0), service_id=body.field(Reader.u16, 0),
                  method_id=body.field(Reader.u16, 0), flags=body.field(Reader.u16, 0),
                  version=body.field(_read_version, (0, 0, 0, 0)), payload=body.field(Reader.blob, b""),
                  timestamp=body.field(lambda r: r.optional(_read_timestamp)))


# --- the TCP frame (src/common/net/MessageHeader.h, WriteItem.h, Processor.h, Transport.cc) ----------------------

HEADER = struct.Struct("<II")  # checksum, size
SERDE_MAGIC = 0x86
MAX_MESSAGE_SIZE = 512 * 1024 * 1024  # kMessageMaxSize: 3FS drops the connection at this size or more


def serde_checksum(message, compressed=False):
    """`Checksum::calcSerde`: CRC32C from 0 of the packet, low byte replaced by 0x86 (| 1 if compressed)."""
    return (crc32c_update(message, 0) & ~0xFF & 0xFFFFFFFF) | SERDE_MAGIC | int(bool(compressed))


def encode_frame(message, compressed=False):
    return HEADER.pack(serde_checksum(message, compressed), len(message)) + message


def parse_header(header, max_size=MAX_MESSAGE_SIZE):
    """8 header bytes -> (checksum, size); FrameError when they cannot start a 3FS serde frame."""
    checksum, size = HEADER.unpack(header)
    if checksum & 0xFE != SERDE_MAGIC:
        raise FrameError(f"checksum low byte {checksum & 0xFF:#04x} is not the serde magic 0x86/0x87")
    if size >= MAX_MESSAGE_SIZE or size > max_size:
        raise FrameError(f"frame size {size} is larger than allowed ({min(max_size, MAX_MESSAGE_SIZE - 1)})")
    if size == 0:
        raise FrameError("empty frame")
    return checksum, size


def is_compressed(checksum):
    return bool(checksum & 1)


def verify_frame(checksum, message):
    """Raise FrameError when `message` does not match the header's checksum."""
    expected = serde_checksum(message, is_compressed(checksum))
    if checksum != expected:
        raise FrameError(f"checksum {checksum:#010x} does not match the frame ({expected:#010x})")
