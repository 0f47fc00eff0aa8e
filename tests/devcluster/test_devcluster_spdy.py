"""The process kubelet's SPDY/3.1 codec and port-forward session, without a cluster.

The known frames are what kubectl v1.32 (moby/spdystream) sent the kubelet for one forwarded
connection: the error stream's SYN_STREAM, its empty FIN, and the data stream's SYN_STREAM,
whose header block continues the first one's zlib stream.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from typing import Any, cast

import pytest

from runstate_dev.kubelet import portforward, spdy

KUBECTL_FRAMES = bytes.fromhex(
    "800300010000003f0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a080861"
    "4cb45a024cc6a68616e062a85388b20f198094adf8c0600000000ffff0000000101000000800300010000"
    "001800000003000000000000c2aa1b54102512a119000000ffff"
)
FIRST_FRAME_END = 8 + 0x3F


def test_the_dictionary_is_spdy3s() -> None:
    # Its Adler-32 is the dictionary id in the zlib header of every SPDY/3 header block
    # (bytes 20-23 of kubectl's first frame).
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert KUBECTL_FRAMES[20:24] == bytes.fromhex("e3c6a7c2")
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b",utf-,*,enq=0.")


def test_kubectls_frames_decode_with_one_zlib_stream() -> None:
    frames = spdy.Decoder().feed(KUBECTL_FRAMES)
    assert frames == [
        spdy.SynStream(1, {"streamtype": ("error",), "port": ("18765",), "requestid": ("0",)}),
        spdy.Data(1, b"", spdy.FLAG_FIN),
        spdy.SynStream(3, {"streamtype": ("data",), "port": ("18765",), "requestid": ("0",)}),
    ]
    # The third frame's block is not a zlib stream of its own: it needs the first's state.
    with pytest.raises(spdy.ProtocolError):
        spdy.Decoder().feed(KUBECTL_FRAMES[FIRST_FRAME_END + 8 :])


def test_frames_arrive_in_pieces() -> None:
    decoder = spdy.Decoder()
    got: list[spdy.Frame] = []
    for index in range(len(KUBECTL_FRAMES)):
        got += decoder.feed(KUBECTL_FRAMES[index : index + 1])
        if index < FIRST_FRAME_END - 1:
            assert got == []
    assert got == spdy.Decoder().feed(KUBECTL_FRAMES)


def test_our_header_blocks_are_zlib_with_the_dictionary_flushed_per_frame() -> None:
    encoder = spdy.Encoder()
    headers = {"port": ("8080",), "streamtype": ("data",), "x-two": ("a", "b")}
    reply = encoder.encode(spdy.SynReply(5, headers, spdy.FLAG_FIN))
    first, flags_length, stream_id = struct.unpack_from(">III", reply)
    assert first == 0x80030002
    assert flags_length == (spdy.FLAG_FIN << 24) | (len(reply) - 8)
    assert stream_id == 5
    # A plain zlib inflater with the dictionary reads it: the uncompressed block, exactly.
    inflater = zlib.decompressobj(zdict=spdy.DICTIONARY)
    block = inflater.decompress(reply[12:])
    assert block == (
        b"\x00\x00\x00\x03"
        b"\x00\x00\x00\x04port\x00\x00\x00\x048080"
        b"\x00\x00\x00\x0astreamtype\x00\x00\x00\x04data"
        b"\x00\x00\x00\x05x-two\x00\x00\x00\x03a\x00b"
    )
    # The next frame continues the same zlib stream (a sync flush, no new header).
    second = encoder.encode(spdy.SynReply(7, {"port": ("8080",)}))
    assert not second[12:].startswith(b"\x78")
    assert spdy.parse_header_block(inflater.decompress(second[12:])) == {"port": ("8080",)}


ALL_FRAMES: list[spdy.Frame] = [
    spdy.SynStream(1, {"streamtype": ("error",), "port": ("80",)}, spdy.FLAG_FIN, 0, 3),
    spdy.SynReply(1),
    spdy.SynReply(3, {"a": ("1", "2")}, spdy.FLAG_FIN),
    spdy.RstStream(3, spdy.RstStatus.CANCEL),
    spdy.Settings(((0, 7, 65536), (1, 4, 100)), 1),
    spdy.Ping(7),
    spdy.GoAway(5, 0),
    spdy.HeadersFrame(3, {"b": ("x",)}),
    spdy.WindowUpdate(3, 4096),
    spdy.Data(3, b"payload\x00\xff" * 1000),
    spdy.Data(3, b"", spdy.FLAG_FIN),
    spdy.UnknownControl(0x0A, 0, b"\x01\x02"),
]


def test_every_frame_round_trips() -> None:
    encoder, decoder = spdy.Encoder(), spdy.Decoder()
    wire = b"".join(encoder.encode(frame) for frame in ALL_FRAMES)
    assert decoder.feed(wire[:-3]) == ALL_FRAMES[:-1]
    assert decoder.feed(wire[-3:]) == ALL_FRAMES[-1:]


def test_malformed_input_is_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError, match="version 2"):
        spdy.Decoder().feed(bytes.fromhex("8002000100000000"))
    with pytest.raises(spdy.ProtocolError, match="short control frame"):
        spdy.Decoder().feed(bytes.fromhex("8003000300000002" + "0001"))
    with pytest.raises(ValueError):
        spdy.Encoder().encode(spdy.Data(0, b"x"))


class FakeTransport:
    """The writing end of an upgraded connection, collecting the session's frames."""

    def __init__(self) -> None:
        self.decoder = spdy.Decoder()
        self.frames: list[spdy.Frame] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.frames += self.decoder.feed(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def until(check: Any, within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_a_session_pairs_streams_and_copies_both_ways() -> None:
    async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi:")
        writer.write((await reader.read()).upper())
        writer.close()

    server = await asyncio.start_server(upper, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = FakeTransport()
    session = portforward.PortForwardSession(cast(asyncio.Transport, transport), "p", "u-1")
    running = asyncio.create_task(session.run())
    client = spdy.Encoder()
    ports = {"port": (str(port),), "requestid": ("0",)}
    session.feed_data(client.encode(spdy.SynStream(1, {**ports, "streamtype": ("error",)})))
    session.feed_data(client.encode(spdy.Data(1, b"", spdy.FLAG_FIN)))
    session.feed_data(client.encode(spdy.SynStream(3, {**ports, "streamtype": ("data",)})))
    session.feed_data(client.encode(spdy.Data(3, b"abc")))
    session.feed_data(client.encode(spdy.Data(3, b"def", spdy.FLAG_FIN)))
    # A stream without a port is reset, as the kubelet rejects it.
    session.feed_data(client.encode(spdy.SynStream(5, {"streamtype": ("data",)})))
    session.feed_data(client.encode(spdy.Ping(9)))

    def data_done() -> bool:
        return spdy.Data(3, b"", spdy.FLAG_FIN) in transport.frames

    await until(data_done)
    frames = transport.frames
    assert frames[:2] == [spdy.SynReply(1), spdy.SynReply(3)]
    assert spdy.RstStream(5, spdy.RstStatus.CANCEL) in frames
    assert spdy.Ping(9) in frames
    received = b"".join(f.data for f in frames if isinstance(f, spdy.Data) and f.stream_id == 3)
    assert received == b"hi:ABCDEF"
    assert spdy.Data(1, b"", spdy.FLAG_FIN) in frames  # the error stream: closed, no error
    session.feed_eof()
    await asyncio.wait_for(running, 5)
    assert transport.closed
    server.close()


async def test_a_refused_connection_is_written_on_the_error_stream() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    transport = FakeTransport()
    session = portforward.PortForwardSession(cast(asyncio.Transport, transport), "p", "u-1")
    running = asyncio.create_task(session.run())
    client = spdy.Encoder()
    ports = {"port": (str(dead),), "requestid": ("7",)}
    session.feed_data(client.encode(spdy.SynStream(1, {**ports, "streamtype": ("error",)})))
    session.feed_data(client.encode(spdy.SynStream(3, {**ports, "streamtype": ("data",)})))

    def reported() -> bool:
        return any(isinstance(f, spdy.Data) and f.stream_id == 1 for f in transport.frames)

    await until(reported)
    error = next(f for f in transport.frames if isinstance(f, spdy.Data) and f.stream_id == 1)
    assert error.fin
    assert error.data.decode() == (
        f"error forwarding port {dead} to pod p, uid u-1: failed to connect to "
        f"localhost:{dead} inside the pod: dial tcp 127.0.0.1:{dead}: connect: connection refused"
    )
    assert spdy.Data(3, b"", spdy.FLAG_FIN) in transport.frames
    session.close()
    await asyncio.wait_for(running, 5)
