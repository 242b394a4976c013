"""What an uploaded image is and how large it is, read from its header before decoding it.

Written by hand on purpose: OpenCV decodes the whole image before it tells its size, which is
exactly what a pixel-count limit must avoid (a small PNG can declare 60000 x 60000 pixels).
Only JPEG and PNG are accepted, and both headers are simple: PNG has its size in the fixed
``IHDR`` chunk, JPEG in its first start-of-frame (``SOFn``) segment.
"""

from __future__ import annotations

import struct
from typing import Literal

ImageKind = Literal["jpeg", "png"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# SOF0-SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and RST0-7 (SOI/EOI are handled apart).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def sniff(data: bytes) -> ImageKind | None:
    """The image format ``data`` starts with: ``jpeg``, ``png``, or None."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) in pixels a JPEG or PNG declares, or None if its header is damaged.

    Args:
        data: The encoded image.

    Returns:
        ``(width, height)``, or None when the header cannot be read.
    """
    kind = sniff(data)
    if kind == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        w, h = struct.unpack(">II", data[16:24])
        return (int(w), int(h)) if w > 0 and h > 0 else None
    if kind == "jpeg":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2  # after SOI
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if length < 2:
            return None
        if marker in _SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return (int(w), int(h)) if w > 0 and h > 0 else None
        i += 2 + length
    return None
