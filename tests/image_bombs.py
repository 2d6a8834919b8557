"""Hostile image files for the guard tests, made without ever holding their pixels decoded."""

from __future__ import annotations

import struct
import zlib
from functools import cache

BOMB_SIDE = 13300  # the reported file: 13300x13300 (177 million pixels), under 1 MB as a PNG


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


@cache
def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A real, valid greyscale PNG of ``side`` x ``side`` black pixels, written row by row into a
    zlib stream (a few hundred KB; decoding it would take ``side**2`` bytes, RGB three times that)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte "none", then the row's pixels
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
