"""SPDY/3.1 framing, as Kubernetes' streaming connections (moby/spdystream) speak it.

Owns the frames' wire format (8-byte headers: control frames with version 3 and a type, data
frames with a 31-bit stream id; flags and a 24-bit length), the typed frames that port-forward
needs (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE, DATA;
other control types are kept as `UnknownControl`, which SPDY says to ignore), and the name/value
header blocks, zlib-compressed with the SPDY/3 dictionary in one zlib stream per direction for a
connection's life (`Encoder` and `Decoder` each hold theirs). Pure: no sockets, no asyncio, no
knowledge of what the streams carry (that is `portforward`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3


class FrameType(IntEnum):
    """The control frames' types (SPDY/3 section 2.6)."""

    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    """Why a stream is reset (RST_STREAM's status codes; the ones this package sends)."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    CANCEL = 5
    INTERNAL_ERROR = 6


class GoAwayStatus(IntEnum):
    """Why a connection ends (GOAWAY's status codes)."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

MAX_LENGTH = (1 << 24) - 1
_STREAM_ID = 0x7FFFFFFF  # stream ids are 31 bits; the top bit is reserved
_HEADER = struct.Struct(">II")

# The SPDY/3 header dictionary (draft 3, section 2.6.10.1): these words, each after its length
# as 4 bytes, then the text blob. 1423 bytes.
_DICTIONARY_WORDS = (
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
)
_DICTIONARY_TEXT = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = (
    b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICTIONARY_WORDS)
    + _DICTIONARY_TEXT.encode()
)

#: Header names (lower case, as SPDY/3 requires) and their values.
Headers = dict[str, tuple[str, ...]]


class ProtocolError(Exception):
    """Bytes that are not SPDY/3 frames (the connection cannot go on)."""


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    flags: int = 0
    associated_to: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    #: (flags, id, value) of each setting.
    entries: tuple[tuple[int, int, int], ...] = ()
    flags: int = 0


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = 0


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownControl:
    frame_type: int
    flags: int
    payload: bytes


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes = b""
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


Frame = (
    SynStream
    | SynReply
    | RstStream
    | Settings
    | Ping
    | GoAway
    | HeadersFrame
    | WindowUpdate
    | UnknownControl
    | Data
)


def header_block(headers: Mapping[str, Iterable[str]]) -> bytes:
    """The uncompressed name/value block: a count, then each lower-cased name and its values
    joined by NUL, every length 4 bytes big-endian."""
    parts = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        key = name.lower().encode()
        value = "\0".join(values).encode()
        parts += [struct.pack(">I", len(key)), key, struct.pack(">I", len(value)), value]
    return b"".join(parts)


def parse_header_block(block: bytes) -> Headers:
    """The headers of an uncompressed name/value block."""
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        offset = 4
        headers: Headers = {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", block, offset)
            name = block[offset + 4 : offset + 4 + size]
            offset += 4 + size
            (size,) = struct.unpack_from(">I", block, offset)
            value = block[offset + 4 : offset + 4 + size]
            if len(value) != size:
                raise ProtocolError("header block ends inside a value")
            offset += 4 + size
            headers[name.decode()] = tuple(value.decode().split("\0"))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"bad header block: {exc}") from None
    return headers


class Encoder:
    """Frames to bytes, with this direction's header compressor (one per connection)."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(level=9, zdict=DICTIONARY)

    def _compressed(self, headers: Mapping[str, Iterable[str]]) -> bytes:
        return self._zlib.compress(header_block(headers)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, Data):
            if not 0 < frame.stream_id < 1 << 31 or len(frame.data) > MAX_LENGTH:
                raise ValueError(f"bad data frame for stream {frame.stream_id}")
            return _HEADER.pack(frame.stream_id, frame.flags << 24 | len(frame.data)) + frame.data
        frame_type, flags, payload = self._control(frame)
        if len(payload) > MAX_LENGTH:
            raise ValueError("control frame too long")
        head = _HEADER.pack(0x80000000 | VERSION << 16 | frame_type, flags << 24 | len(payload))
        return head + payload

    def _control(self, frame: Frame) -> tuple[int, int, bytes]:
        match frame:
            case SynStream():
                fixed = struct.pack(
                    ">IIBB", frame.stream_id, frame.associated_to, frame.priority << 5, 0
                )
                return FrameType.SYN_STREAM, frame.flags, fixed + self._compressed(frame.headers)
            case SynReply():
                fixed = struct.pack(">I", frame.stream_id)
                return FrameType.SYN_REPLY, frame.flags, fixed + self._compressed(frame.headers)
            case RstStream():
                return FrameType.RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status)
            case Settings():
                body = struct.pack(">I", len(frame.entries)) + b"".join(
                    struct.pack(">II", flags << 24 | key, value)
                    for flags, key, value in frame.entries
                )
                return FrameType.SETTINGS, frame.flags, body
            case Ping():
                return FrameType.PING, 0, struct.pack(">I", frame.ping_id)
            case GoAway():
                return (
                    FrameType.GOAWAY,
                    0,
                    struct.pack(">II", frame.last_good_stream_id, frame.status),
                )
            case HeadersFrame():
                fixed = struct.pack(">I", frame.stream_id)
                return FrameType.HEADERS, frame.flags, fixed + self._compressed(frame.headers)
            case WindowUpdate():
                return FrameType.WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta)
            case UnknownControl():
                return frame.frame_type, frame.flags, frame.payload
        raise TypeError(f"not a frame: {frame!r}")


class Decoder:
    """Bytes to frames, as they arrive, with this direction's header decompressor."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(zdict=DICTIONARY)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data`` (a partial frame waits for more)."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= _HEADER.size:
            first, flags_length = _HEADER.unpack_from(self._buffer, 0)
            end = _HEADER.size + (flags_length & MAX_LENGTH)
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            flags = flags_length >> 24
            if first & 0x80000000:
                version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
                if version != VERSION:
                    raise ProtocolError(f"SPDY version {version}, not {VERSION}")
                frames.append(self._control(frame_type, flags, payload))
            else:
                frames.append(Data(first, payload, flags))
        return frames

    def _headers(self, compressed: bytes) -> Headers:
        try:
            block = self._zlib.decompress(compressed)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not inflate: {exc}") from None
        return parse_header_block(block)

    def _control(self, frame_type: int, flags: int, payload: bytes) -> Frame:
        try:
            match frame_type:
                case FrameType.SYN_STREAM:
                    stream_id, associated, priority, _slot = struct.unpack_from(">IIBB", payload)
                    return SynStream(
                        stream_id & _STREAM_ID,
                        self._headers(payload[10:]),
                        flags,
                        associated & _STREAM_ID,
                        priority >> 5,
                    )
                case FrameType.SYN_REPLY:
                    (stream_id,) = struct.unpack_from(">I", payload)
                    return SynReply(stream_id & _STREAM_ID, self._headers(payload[4:]), flags)
                case FrameType.RST_STREAM:
                    stream_id, status = struct.unpack_from(">II", payload)
                    return RstStream(stream_id & _STREAM_ID, status)
                case FrameType.SETTINGS:
                    (count,) = struct.unpack_from(">I", payload)
                    entries = []
                    for index in range(count):
                        flag_id, value = struct.unpack_from(">II", payload, 4 + 8 * index)
                        entries.append((flag_id >> 24, flag_id & 0xFFFFFF, value))
                    return Settings(tuple(entries), flags)
                case FrameType.PING:
                    (ping_id,) = struct.unpack_from(">I", payload)
                    return Ping(ping_id)
                case FrameType.GOAWAY:
                    last, status = struct.unpack_from(">II", payload)
                    return GoAway(last & _STREAM_ID, status)
                case FrameType.HEADERS:
                    (stream_id,) = struct.unpack_from(">I", payload)
                    return HeadersFrame(stream_id & _STREAM_ID, self._headers(payload[4:]), flags)
                case FrameType.WINDOW_UPDATE:
                    stream_id, delta = struct.unpack_from(">II", payload)
                    return WindowUpdate(stream_id & _STREAM_ID, delta & _STREAM_ID)
        except struct.error as exc:
            raise ProtocolError(f"short control frame of type {frame_type}: {exc}") from None
        return UnknownControl(frame_type, flags, payload)
