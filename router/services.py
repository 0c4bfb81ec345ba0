"""What a process gives plugins (``GatewayServices``): the settings, the intake door, the store and
the evidence blob store. The HTTP app and the worker build theirs alike; each sets
``services.redis`` once it has connected."""

from __future__ import annotations

from normalizer.evidence import DirectoryBlobStore
from plugins.contract import GatewayServices
from plugins.settings import Settings
from router.intake import Intake
from router.store import ComplaintStore


def build_services(settings: Settings, store: ComplaintStore) -> GatewayServices:
    blobs = DirectoryBlobStore(settings.evidence_dir, max_bytes=settings.max_evidence_bytes)
    return GatewayServices(settings=settings, intake=Intake(store), store=store, blobs=blobs)


__all__ = ["build_services"]
