"""The benchmarks' load generator (bench/loadgen.py): a keep-alive connection the server closed
while it was idle is replaced before a request goes out on it; a request whose connection is
reset after it went out is an error, never sent again (the server may have taken it); errors are
reported by kind."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from loadgen import Connection, LoadResult, build_request  # noqa: E402

ANSWER = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    await reader.readexactly(length)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (RST), as a server that dies or aborts does."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Server:
    """A local HTTP server that answers each connection's first request, then does ``then`` with
    the connection ("close": closes it; "reset": reads the next request and resets)."""

    def __init__(self, then: str) -> None:
        self.then = then
        self.connections = 0
        self.requests = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await read_request(reader)
            self.requests += 1
            writer.write(ANSWER)
            await writer.drain()
            if self.then == "reset":
                await read_request(reader)
                self.requests += 1
                reset(writer)
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.raw = build_request("POST", "/v1/messages", f"127.0.0.1:{self.port}", {}, b"{}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_a_connection_closed_while_idle_is_replaced_before_the_request_goes_out():
    async with Server(then="close") as server:
        conn = Connection("127.0.0.1", server.port)
        try:
            assert await conn.request(server.raw) == (202, b"ok")
            for _ in range(200):  # until the client has seen the server's close
                if conn.reader is not None and conn.reader.at_eof():
                    break
                await asyncio.sleep(0.01)
            assert await conn.request(server.raw) == (202, b"ok")
        finally:
            conn.close()
    assert (server.connections, server.requests, conn.retried) == (2, 2, 0)  # nothing sent twice


async def test_a_reset_after_the_request_went_out_is_an_error_not_sent_again():
    async with Server(then="reset") as server:
        conn = Connection("127.0.0.1", server.port)
        try:
            assert await conn.request(server.raw) == (202, b"ok")
            failed = ""
            try:
                await conn.request(server.raw)  # read by the server, then reset
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                failed = type(exc).__name__
        finally:
            conn.close()
    assert failed in ("ConnectionResetError", "ConnectionError", "IncompleteReadError")
    assert (server.connections, server.requests, conn.retried) == (1, 2, 0)


def test_the_summary_names_the_errors_by_kind():
    result = LoadResult(sent=4, ok=2, seconds=1.0, latencies_ms=[1.0, 2.0], statuses={202: 2})
    result.failed("ConnectionResetError")
    result.failed("generator limit")
    result.retried = 1
    assert result.errors == 2
    assert result.summary().endswith("; errors 2 {'ConnectionResetError': 1, 'generator limit': 1}; sent again 1")
    assert "errors" not in LoadResult(sent=1, ok=1, seconds=1.0, latencies_ms=[1.0]).summary()
