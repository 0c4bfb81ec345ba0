"""The benchmarks' load generator (bench/loadgen.py): a request on a reused keep-alive connection
that the server reset is sent again on a new connection, and errors are reported by kind."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from loadgen import Connection, LoadResult, build_request  # noqa: E402

ANSWER = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    await reader.readexactly(length)
    return True


async def test_a_reset_on_a_reused_connection_is_sent_again_on_a_new_one():
    connections, requests = 0, 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections, requests
        connections += 1
        first_connection = connections == 1
        try:
            await read_request(reader)
            requests += 1
            writer.write(ANSWER)
            await writer.drain()
            await read_request(reader)
            requests += 1
            if first_connection:  # the second request on it: reset (RST), no answer
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            writer.write(ANSWER)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = build_request("POST", "/v1/messages", f"127.0.0.1:{port}", {}, b"{}")
    conn = Connection("127.0.0.1", port)
    try:
        assert await conn.request(raw) == (202, b"ok")
        assert await conn.request(raw) == (202, b"ok")  # reset, then sent again on a new connection
    finally:
        conn.close()
        server.close()
        await server.wait_closed()
    assert (connections, requests) == (2, 3)


async def test_a_reset_on_a_new_connection_is_an_error():
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = Connection("127.0.0.1", port)
    try:
        try:
            await conn.request(build_request("POST", "/", f"127.0.0.1:{port}", {}, b""))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            failed = type(exc).__name__
        else:
            failed = ""
    finally:
        conn.close()
        server.close()
        await server.wait_closed()
    assert failed in ("ConnectionResetError", "ConnectionError", "IncompleteReadError")


def test_the_summary_names_the_errors_by_kind():
    result = LoadResult(sent=4, ok=2, seconds=1.0, latencies_ms=[1.0, 2.0], statuses={202: 2})
    result.failed("ConnectionResetError")
    result.failed("generator limit")
    assert result.errors == 2
    assert result.summary().endswith("; errors 2 {'ConnectionResetError': 1, 'generator limit': 1}")
    assert "errors" not in LoadResult(sent=1, ok=1, seconds=1.0, latencies_ms=[1.0]).summary()
