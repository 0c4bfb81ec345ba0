"""A fault-injecting TCP proxy for tests: it sits on a free loopback port in front of a real
upstream (Dovecot's IMAP port, a provider fake's HTTP port) and, switched at run time, passes
traffic through, stalls, drops connections, or cuts an answer in the middle.

    proxy = FaultProxy(upstream_port, http=True).start()
    proxy.stall()                 # every connection, live or new, holds: nothing goes either way
    proxy.pass_through()          # held traffic moves on
    proxy.drop()                  # live connections reset; new ones reset (HTTP: once the request is in)
    proxy.script(DROP, STALL)     # the next two new connections get these faults, later ones the mode
    proxy.cut(after=b"BODY[]", keep=64)  # answers reset 64 bytes after the marker
    proxy.only("/media/", "/file/")  # HTTP: faults meet only connections whose first request's
                                     # path has one of these; the rest pass (one host, many uses)

Faults:

- ``PASS``: bytes go both ways.
- ``STALL``: the connection is accepted and the client's bytes are read (and kept), but nothing
  reaches the upstream and nothing comes back, until the proxy passes again (then the kept bytes
  go on: a server that answers after a long delay). A client that gives up closes its end.
- ``REFUSE``: accepted, then reset at once (a server that dies on connect).
- ``DROP``: for HTTP, the request is read, then the connection is reset without the upstream
  seeing it (a server that dies while handling it); for raw TCP, the same as ``REFUSE``.
- ``cut(after, keep)``: the upstream's answer is forwarded up to ``keep`` bytes past the first
  ``after`` marker, then both sides are reset (a connection lost mid-response).

With ``only(...)`` set, a new connection is held until its first request line is in, then meets
the faults (the next scripted one, or the mode) if its path names one of the parts, else passes
for good; a ``REFUSE`` then resets it with the request unanswered.

The proxy counts what it sees (``connections``, and for HTTP ``requests`` with the method,
path, body and fault each met), with monotonic timestamps, so tests can assert the spacing and the
number of attempts: no storm. Threads, not asyncio, so it keeps working whatever the test's event
loop is doing.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

POLL_S = 0.02


@dataclass(frozen=True)
class Fault:
    kind: str  # "pass", "stall", "refuse", "drop", "cut"
    after: bytes = b""
    keep: int = 0

    def __str__(self) -> str:
        return self.kind


PASS = Fault("pass")
STALL = Fault("stall")
REFUSE = Fault("refuse")
DROP = Fault("drop")


def cut(after: bytes, keep: int = 0) -> Fault:
    return Fault("cut", after, keep)


@dataclass
class Connection:
    id: int
    at: float  # time.monotonic() when accepted
    fault: str  # the fault it met when accepted
    #: when it ended: answered and closed by the upstream, reset, or given up by the client
    ended_at: float | None = None
    #: when a ``cut`` fault actually cut its answer (the marker came by), if it did
    cut_at: float | None = None


@dataclass
class Request:
    """One HTTP request the client sent through the proxy (whether or not the upstream saw it)."""

    at: float  # when its first byte arrived
    connection: int
    method: str
    path: str
    body: bytes
    fault: str  # the fault in force when it was complete


@dataclass
class FaultProxy:
    upstream_port: int
    upstream_host: str = "127.0.0.1"
    #: Parse the client's stream as HTTP/1.x requests (to count and record them).
    http: bool = False
    connections: list[Connection] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._mode = PASS
        self._scripted: list[Fault] = []
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._closing = threading.Event()
        self._only: tuple[str, ...] = ()

    # -- control ---------------------------------------------------------------------------

    def start(self) -> "FaultProxy":
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(POLL_S * 5)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"faultproxy:{self.port}", daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._acceptor.join(2)
        self._listener.close()
        for link in list(self._links):
            link.kill()
        for link in list(self._links):
            link.join(2)

    @property
    def mode(self) -> Fault:
        return self._mode

    def set_mode(self, fault: Fault) -> None:
        """The fault every connection without a scripted one meets from now on, live ones included
        (a live connection stalls, resumes, or is reset; a cut applies to answers still to come)."""
        with self._lock:
            self._mode = fault

    def pass_through(self) -> None:
        self.set_mode(PASS)

    def stall(self) -> None:
        self.set_mode(STALL)

    def drop(self) -> None:
        self.set_mode(DROP)

    def refuse(self) -> None:
        self.set_mode(REFUSE)

    def cut(self, after: bytes, keep: int = 0) -> None:
        self.set_mode(cut(after, keep))

    def script(self, *faults: Fault) -> None:
        """The next new connections meet these faults, one each, in order; then the mode again."""
        with self._lock:
            self._scripted.extend(faults)

    def only(self, *path_parts: str) -> None:
        """HTTP: from now on, faults meet only new connections whose first request's path contains
        one of ``path_parts``; no parts: every connection again."""
        if path_parts and not self.http:
            raise ValueError("only() needs an HTTP proxy")
        with self._lock:
            self._only = tuple(path_parts)

    def reset_all(self) -> None:
        """Reset every live connection now (the mode is unchanged)."""
        for link in list(self._links):
            link.kill()

    # -- what happened ---------------------------------------------------------------------

    def connections_since(self, t: float) -> list[Connection]:
        return [c for c in self.connections if c.at >= t]

    def requests_to(self, path_part: str) -> list[Request]:
        return [r for r in self.requests if path_part in r.path]

    @property
    def live(self) -> int:
        return sum(1 for link in self._links if link.is_alive())

    # -- machinery -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        n = 0
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:  # with only(), a scripted fault waits for a connection that qualifies
                own = self._scripted.pop(0) if self._scripted and not self._only else None
            n += 1
            record = Connection(n, time.monotonic(), str(own or self._mode))
            self.connections.append(record)
            link = _Link(self, client, record, own)
            self._links = [x for x in self._links if x.is_alive()] + [link]
            link.start()


def _reset(sock: socket.socket | None) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _HttpRequests:
    """Splits the client's byte stream into HTTP/1.x requests (Content-Length bodies)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started: float | None = None

    def feed(self, data: bytes) -> list[tuple[float, str, str, bytes]]:
        if self.started is None and data:
            self.started = time.monotonic()
        self.buffer += data
        done = []
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return done
            head = self.buffer[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            method, path = (lines[0].split(" ") + ["", ""])[:2]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return done
            done.append((self.started or time.monotonic(), method, path, self.buffer[head_end + 4 : end]))
            self.buffer = self.buffer[end:]
            self.started = time.monotonic() if self.buffer else None

    @property
    def partial(self) -> bool:
        return bool(self.buffer)


class _Link(threading.Thread):
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, record: Connection, own: Fault | None) -> None:
        super().__init__(name=f"faultproxy:{proxy.port}:{record.id}", daemon=True)
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.record = record
        self.own = own
        self.killed = threading.Event()
        self.held = b""  # client bytes not yet forwarded (stalled)
        self.answered = b""  # the upstream's bytes seen so far (for cuts)
        self.requests = _HttpRequests() if proxy.http else None
        self.complete_requests = 0
        self.only = proxy._only  # as it was when the connection came in
        self.first_line = b""  # the client's bytes while the connection waits to be told apart

    def fault(self) -> Fault:
        return self.own or self.proxy.mode

    def kill(self) -> None:
        self.killed.set()

    def run(self) -> None:
        answered = False
        try:
            answered = self._pump()
        except OSError:
            pass
        finally:
            self.record.ended_at = time.monotonic()
            if answered:
                self._shutdown_client()
            _reset(self.client)
            _reset(self.upstream)

    def _sort_out(self) -> bool:
        """With ``only``: wait for the first request line, then pass the connection for good or
        leave it to the faults. False when the client went away first."""
        while not self.killed.is_set() and not self.proxy._closing.is_set():
            end = self.first_line.find(b"\r\n")
            if end >= 0:
                parts = self.first_line[:end].decode("latin-1").split(" ")
                path = parts[1] if len(parts) > 1 else ""
                if not any(part in path for part in self.only):
                    self.own = PASS
                else:
                    with self.proxy._lock:
                        self.own = self.proxy._scripted.pop(0) if self.proxy._scripted else None
                self.record.fault = str(self.fault())
                data, self.first_line = self.first_line, b""
                self._from_client(data, self.fault())
                return True
            readable, _, _ = select.select([self.client], [], [], POLL_S)
            if readable:
                data = self.client.recv(65536)
                if not data:
                    return False
                self.first_line += data
        return False

    def _pump(self) -> bool:
        """Forward until the connection ends; True when the upstream closed it after answering."""
        if self.only and not self._sort_out():
            return False
        while not self.killed.is_set() and not self.proxy._closing.is_set():
            fault = self.fault()
            if fault.kind == "refuse" or (fault.kind == "drop" and self.requests is None):
                return False
            if fault.kind == "drop" and self.complete_requests and not self.requests.partial:
                return False  # the request is in; the server "dies" before answering
            if fault.kind in ("pass", "cut") and self.upstream is None:
                self.upstream = socket.create_connection((self.proxy.upstream_host, self.proxy.upstream_port), 5)
            if fault.kind in ("pass", "cut") and self.held:
                self.upstream.sendall(self.held)
                self.held = b""
            watch = [self.client]
            if self.upstream is not None and fault.kind in ("pass", "cut"):
                watch.append(self.upstream)
            readable, _, _ = select.select(watch, [], [], POLL_S)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return sock is self.upstream
                if sock is self.client:
                    self._from_client(data, fault)
                elif not self._to_client(data, fault):
                    return False
        return False

    def _from_client(self, data: bytes, fault: Fault) -> None:
        if self.requests is not None:
            for started, method, path, body in self.requests.feed(data):
                self.complete_requests += 1
                self.proxy.requests.append(Request(started, self.record.id, method, path, body, str(fault)))
        if fault.kind in ("pass", "cut") and self.upstream is not None:
            self.upstream.sendall(data)
        else:
            self.held += data

    def _to_client(self, data: bytes, fault: Fault) -> bool:
        """Forward an answer; False once a cut has reset the connection."""
        if fault.kind == "cut":
            seen = len(self.answered)
            self.answered += data
            at = self.answered.find(fault.after)
            if at >= 0:
                stop = at + len(fault.after) + fault.keep
                if stop <= len(self.answered):
                    if stop > seen:
                        self.client.sendall(self.answered[seen:stop])
                    self.record.cut_at = time.monotonic()
                    return False
        self.client.sendall(data)
        return True

    def _shutdown_client(self) -> None:
        """Pass the upstream's close on, letting the client read what it was sent first (a
        close with unread data would reset the connection over it)."""
        try:
            self.client.shutdown(socket.SHUT_WR)
            self.client.settimeout(0.2)
            while self.client.recv(65536):
                pass
            self.client.close()
        except OSError:
            pass


__all__ = ["FaultProxy", "Fault", "PASS", "STALL", "REFUSE", "DROP", "cut", "Connection", "Request"]
