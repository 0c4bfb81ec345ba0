"""The fake provider API lives in the integrators' test kit; tests import it from here too."""

from plugins.testkit import Call, FakeApi

__all__ = ["Call", "FakeApi"]
