"""A request header read from the ASGI scope as the server gave it (``plugins.requests.header``):
what the credential check and the body's size and type checks read, without Litestar's
``Headers`` made for every request."""

from __future__ import annotations

from plugins.requests import header


def test_a_header_is_its_first_value_whatever_the_case_of_its_name() -> None:
    scope = {"headers": [(b"host", b"x"), (b"Authorization", b"Bearer a"), (b"authorization", b"Bearer b"),
                         (b"content-type", b"application/json; charset=\xe9")]}
    assert header(scope, b"authorization") == "Bearer a"
    assert header(scope, b"content-type") == "application/json; charset=\u00e9"  # latin-1, as ASGI says
    assert header(scope, b"content-length") is None
    assert header({"headers": []}, b"authorization") is None
