"""A loopback TCP proxy in front of Redis that, once armed, holds every connection whose client
sends a chosen command (``WATCH``, say): that command and whatever follows on the connection never
reach Redis, and the client waits for an answer that does not come. Other connections, and
commands sent before arming, pass.

It stops a process at a known step of its own code without touching that code: a worker's timer
loop claims due timers (a script, passed) and then blocks in the ``WATCH`` that begins firing
them, so a test can SIGKILL it holding timers it took and never fired.

    trap = CommandTrap(upstream_port, b"WATCH").start()   # point the process at trap.port
    trap.arm()
    ...                                                   # trap.held: connections held so far
    trap.stop()

Threads, not asyncio, so it keeps working whatever the test's event loop is doing.
"""

from __future__ import annotations

import select
import socket
import threading

POLL_S = 0.02


class CommandTrap:
    def __init__(self, upstream_port: int, command: bytes, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        # RESP sends a command name as a bulk string: ``$5\r\nWATCH\r\n``
        self.marker = b"\r\n" + command.upper() + b"\r\n"
        self.armed = threading.Event()
        self.closing = threading.Event()
        self.held = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> "CommandTrap":
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(POLL_S * 5)
        self.port = self.listener.getsockname()[1]
        acceptor = threading.Thread(target=self._accept_loop, name=f"commandtrap:{self.port}", daemon=True)
        acceptor.start()
        self._threads.append(acceptor)
        return self

    def arm(self) -> None:
        self.armed.set()

    def stop(self) -> None:
        self.closing.set()
        for thread in self._threads:
            thread.join(2)
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            link = threading.Thread(target=self._link, args=(client,), daemon=True)
            link.start()
            self._threads.append(link)

    def _link(self, client: socket.socket) -> None:
        upstream = None
        try:
            upstream = socket.create_connection(self.upstream, 5)
            holding = False
            tail = b""  # the end of the last chunk: a marker may straddle two
            while not self.closing.is_set():
                readable, _, _ = select.select([client, upstream], [], [], POLL_S)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return  # either side closed (a killed client): close the other
                    if sock is upstream:
                        client.sendall(data)
                        continue
                    if not holding and self.armed.is_set() and self.marker in (tail + data).upper():
                        holding = True
                        with self._lock:
                            self.held += 1
                    tail = data[-len(self.marker):]
                    if not holding:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass


__all__ = ["CommandTrap"]
