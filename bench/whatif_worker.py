"""A what-if worker for bench/load.py: `python -m gateway worker` with ONE change — httpx builds its
default SSL context once per process instead of once per ``httpx.AsyncClient()``.

The Meta, Telegram and WeChat senders open a new ``httpx.AsyncClient`` for every message they
send; each one builds a fresh ``ssl.SSLContext`` with the system CA store (~50 ms of CPU on the
benchmark machine, even for a plain-http URL). This launcher caches that context, to measure what
sharing one client (or one context) per process would give — a measurement of the proposed fix,
not the shipped code. Only bench/load.py --what-if-shared-ssl uses it.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def install() -> None:
    import httpx._transports.default as transport

    original = transport.create_ssl_context

    @functools.lru_cache(maxsize=8)
    def cached(verify=True, cert=None, trust_env=True):  # type: ignore[no-untyped-def]
        return original(verify=verify, cert=cert, trust_env=trust_env)

    def create_ssl_context(verify=True, cert=None, trust_env=True):  # type: ignore[no-untyped-def]
        try:
            return cached(verify, cert, trust_env)
        except TypeError:  # an unhashable argument (a caller's own context): as before
            return original(verify=verify, cert=cert, trust_env=trust_env)

    transport.create_ssl_context = create_ssl_context


if __name__ == "__main__":
    install()
    from gateway.cli import main

    sys.exit(main(["worker"]))
