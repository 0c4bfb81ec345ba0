"""The ASGI entry the HTTP server imports (``gateway.asgi:app``): settings from the environment."""

from gateway.app import create_app
from gateway.cli import setup_logging
from gateway.settings import load_settings

_settings = load_settings()
setup_logging(_settings.log_level)
app = create_app(_settings)
