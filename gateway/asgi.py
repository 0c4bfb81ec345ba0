"""The ASGI entry the HTTP server imports (``gateway.asgi:app``): settings from the environment."""

from gateway.app import create_app
from gateway.cli import setup_logging
from gateway.settings import load_settings
from router.heap import settle_heap

_settings = load_settings()
setup_logging(_settings.log_level)
app = create_app(_settings)
settle_heap()  # the modules and the app, built once, are never walked by the collector again
