"""Builders of damaged and hostile tool files, shared by the tests and benchmarks/hostile_files.py.

Each starts from a real file made by ``inspector export`` and breaks one thing the way a damaged
disk, a cut download or an attacker would.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

FORMAT = "shopfloor-inspector-tool"


def members_of(source: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(source) as archive:
        return {n: archive.read(n) for n in archive.namelist()}


def pack(members: dict[str, bytes], target: Path, method: int = zipfile.ZIP_STORED) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    target.write_bytes(buffer.getvalue())
    return target


def rewrite(source: Path, target: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy a tool file, letting ``change(members)`` edit its members first."""
    members = members_of(source)
    change(members)
    return pack(members, target)


def add_listed(members: dict[str, bytes], name: str, data: bytes) -> None:
    """Put ``data`` in the file as ``name`` with a matching checksum in the manifest, so only the
    importer's own checks can refuse it."""
    manifest = json.loads(members["manifest.json"])
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    members["manifest.json"] = json.dumps(manifest).encode()
    members[name] = data


def patch_member(data: bytes, name: str, *, flags: int | None = None, method: int | None = None,
                 size: int | None = None) -> bytes:
    """A zip's bytes with one member's general-purpose flags, compression method or declared
    uncompressed size changed in both its local header and the central directory."""
    out = bytearray(data)
    encoded = name.encode()
    # (signature, offset of flags, of method, of uncompressed size, of the name)
    for signature, at_flags, at_method, at_size, at_name in ((b"PK\x03\x04", 6, 8, 22, 30),
                                                              (b"PK\x01\x02", 8, 10, 24, 46)):
        start = out.find(signature)
        while start != -1:
            if out[start + at_name:start + at_name + len(encoded)] == encoded:
                if flags is not None:
                    struct.pack_into("<H", out, start + at_flags, flags)
                if method is not None:
                    struct.pack_into("<H", out, start + at_method, method)
                if size is not None:
                    struct.pack_into("<I", out, start + at_size, size)
            start = out.find(signature, start + 4)
    return bytes(out)


def blank_png(width: int, height: int) -> bytes:
    """A complete, valid black PNG of any size, compressed as it is written: 20000 x 20000 pixels
    take 1.2 MB on disk and 1.2 GB decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor, rows, parts = zlib.compressobj(6), b"\0" * (1 + 3 * width) * 64, []
    for start in range(0, height, 64):
        parts.append(compressor.compress(rows[:(1 + 3 * width) * min(64, height - start)]))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def manifest_bomb(target: Path, inflated_bytes: int) -> Path:
    """A tool file whose manifest.json is a few MB on disk and ``inflated_bytes`` unpacked (JSON
    padded with spaces), written in pieces so making it costs no memory either."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("manifest.json", "w", force_zip64=True) as member:
            member.write(json.dumps({"format": FORMAT, "format_version": 1}).encode()[:-1])
            piece = b" " * 2**20
            for _ in range(inflated_bytes // len(piece)):
                member.write(piece)
            member.write(b"}")
    return target


def digest(folder: Path) -> str:
    """Every file under ``folder``, names and bytes: equal digests, identical tools."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()
