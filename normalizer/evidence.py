"""Evidence blobs: attachments, screenshots, recordings, stored content-addressed behind one
small interface. The default store is a directory under ./var/."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from normalizer.schema import EvidenceLink


class EvidenceRejected(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


ALLOWED_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain",
    "audio/mpeg", "audio/wav", "audio/ogg", "audio/amr", "video/mp4", "audio/mp4",
})
_ALIASES = {"image/jpg": "image/jpeg", "audio/x-wav": "audio/wav", "audio/mp3": "audio/mpeg", "audio/wave": "audio/wav"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sniff_content_type(data: bytes) -> str | None:
    """The type the bytes really are (magic numbers), whatever the sender declared."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"#!AMR"):
        return "audio/amr"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "audio/mp4" if brand in (b"M4A ", b"M4B ") else "video/mp4"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(ch in "\n\r\t\f" or ord(ch) >= 32 for ch in text[:65536]):
        return "text/plain"
    return None


def _normalise_type(declared: str | None) -> str | None:
    if not declared:
        return None
    base = declared.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


class BlobStore(Protocol):
    async def put(self, data: bytes, declared_type: str | None, *, filename: str | None = None,
                  source: str | None = None) -> EvidenceLink: ...

    async def get(self, sha256: str) -> bytes: ...

    async def exists(self, sha256: str) -> bool: ...


class DirectoryBlobStore:
    """Blobs as files ``root/ab/cd/<sha256>``, written atomically and durably."""

    def __init__(self, root: Path, *, max_bytes: int = 10 * 1024 * 1024,
                 allowed_types: frozenset[str] = ALLOWED_TYPES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.allowed_types = allowed_types

    def _path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise KeyError(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def check(self, data: bytes, declared_type: str | None) -> str:
        if not data:
            raise EvidenceRejected("evidence_empty", "the attachment is empty")
        if len(data) > self.max_bytes:
            raise EvidenceRejected("evidence_too_large", f"the attachment is over {self.max_bytes} bytes")
        sniffed = sniff_content_type(data)
        if sniffed is None or sniffed not in self.allowed_types:
            raise EvidenceRejected("evidence_type_not_allowed",
                                   f"content of type {sniffed or 'unknown'} is not accepted as evidence")
        declared = _normalise_type(declared_type)
        if declared and declared != "application/octet-stream" and declared != sniffed:
            raise EvidenceRejected("evidence_type_mismatch", f"declared {declared} but the content is {sniffed}")
        return sniffed

    async def put(self, data: bytes, declared_type: str | None, *, filename: str | None = None,
                  source: str | None = None) -> EvidenceLink:
        content_type = self.check(data, declared_type)
        sha256 = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(self._write, sha256, data)
        safe_name = None
        if filename:
            safe_name = re.sub(r"[^\w.\- ]", "_", os.path.basename(filename))[:120] or None
        return EvidenceLink(id=f"ev_{sha256[:32]}", sha256=sha256, content_type=content_type, size=len(data),
                           filename=safe_name, source=source)

    def _write(self, sha256: str, data: bytes) -> None:
        path = self._path(sha256)
        if path.exists():
            return  # content-addressed: the same bytes are already there
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash
        finally:
            os.close(dir_fd)

    async def get(self, sha256: str) -> bytes:
        path = self._path(sha256)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise KeyError(sha256) from None

    async def exists(self, sha256: str) -> bool:
        try:
            return self._path(sha256).exists()
        except KeyError:
            return False


def decode_base64_attachment(data_b64: str, max_bytes: int) -> bytes:
    compact = "".join(data_b64.split())
    if len(compact) * 3 // 4 > max_bytes + 3:
        raise EvidenceRejected("evidence_too_large", f"the attachment is over {max_bytes} bytes")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceRejected("evidence_bad_encoding", "data_base64 is not valid base64") from None
    if len(data) > max_bytes:
        raise EvidenceRejected("evidence_too_large", f"the attachment is over {max_bytes} bytes")
    return data
