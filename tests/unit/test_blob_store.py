"""The evidence blob store: sniffed types, limits, content addressing, atomic writes, no traversal."""

from __future__ import annotations

import base64

import pytest

from normalizer.evidence import DirectoryBlobStore, EvidenceRejected, decode_base64_attachment, sniff_content_type

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
GIF = b"GIF89a" + b"\x00" * 32
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 16
WAV = b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 16
PDF = b"%PDF-1.7\n%..."
MP3 = b"ID3\x04\x00" + b"\x00" * 32
OGG = b"OggS" + b"\x00" * 32
AMR = b"#!AMR\n" + b"\x00" * 16
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 16
M4A = b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 16
TEXT = "退款凭证 receipt 128.50".encode()
EXE = b"MZ\x90\x00" + b"\x00" * 32

CASES = [
    (PNG, "image/png", "image/png"),
    (PNG, None, "image/png"),
    (PNG, "application/octet-stream", "image/png"),
    (JPEG, "image/jpg", "image/jpeg"),
    (GIF, "image/gif", "image/gif"),
    (WEBP, "image/webp", "image/webp"),
    (WAV, "audio/x-wav", "audio/wav"),
    (PDF, "application/pdf; name=receipt.pdf", "application/pdf"),
    (MP3, "audio/mp3", "audio/mpeg"),
    (OGG, "audio/ogg", "audio/ogg"),
    (AMR, "audio/amr", "audio/amr"),
    (MP4, "video/mp4", "video/mp4"),
    (M4A, "audio/mp4", "audio/mp4"),
    (TEXT, "text/plain; charset=utf-8", "text/plain"),
    (PNG, "image/jpeg", "evidence_type_mismatch"),
    (PDF, "IMAGE/PNG", "evidence_type_mismatch"),
    (EXE, "application/x-msdownload", "evidence_type_not_allowed"),
    (EXE, "image/png", "evidence_type_not_allowed"),
    (b"", "image/png", "evidence_empty"),
    (b"\x00\x01\x02binary", None, "evidence_type_not_allowed"),
]


@pytest.mark.parametrize("data, declared, expected", CASES)
async def test_put_checks_the_real_type(tmp_path, data, declared, expected):
    store = DirectoryBlobStore(tmp_path)
    if expected.startswith("evidence_"):
        with pytest.raises(EvidenceRejected) as info:
            await store.put(data, declared)
        assert info.value.code == expected
        assert not any(p.is_file() for p in tmp_path.rglob("*"))
    else:
        ref = await store.put(data, declared, filename="../../etc/shot.png", source="app")
        assert ref.content_type == expected
        assert ref.size == len(data)
        assert "/" not in (ref.filename or "")
        assert await store.get(ref.sha256) == data


def test_sniff_unknown_is_none():
    assert sniff_content_type(EXE) is None


async def test_size_limit(tmp_path):
    store = DirectoryBlobStore(tmp_path, max_bytes=64)
    with pytest.raises(EvidenceRejected) as info:
        await store.put(PNG + b"\x00" * 64, "image/png")
    assert info.value.code == "evidence_too_large"


async def test_content_addressed_once_on_disk_no_temp_files(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    first = await store.put(PNG, "image/png")
    second = await store.put(PNG, "image/png")
    assert first.sha256 == second.sha256 and first.id == second.id
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].name == first.sha256
    assert files[0].parent.parent.name == first.sha256[:2]
    assert await store.exists(first.sha256)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "a" * 63, "", "g" * 64, "../" + "a" * 61])
async def test_get_refuses_anything_but_a_digest(tmp_path, bad):
    store = DirectoryBlobStore(tmp_path)
    with pytest.raises(KeyError):
        await store.get(bad)
    assert not await store.exists(bad)


async def test_missing_blob_is_keyerror(tmp_path):
    with pytest.raises(KeyError):
        await DirectoryBlobStore(tmp_path).get("a" * 64)


@pytest.mark.parametrize(
    "encoded, limit, code",
    [
        ("!!!", 100, "evidence_bad_encoding"),
        ("aGVsbG8", 100, "evidence_bad_encoding"),  # missing padding
        (base64.b64encode(b"x" * 200).decode(), 100, "evidence_too_large"),
    ],
)
def test_base64_refusals(encoded, limit, code):
    with pytest.raises(EvidenceRejected) as info:
        decode_base64_attachment(encoded, limit)
    assert info.value.code == code


def test_base64_with_line_breaks():
    encoded = base64.encodebytes(PNG).decode()  # MIME-style, with newlines
    assert decode_base64_attachment(encoded, 1000) == PNG
