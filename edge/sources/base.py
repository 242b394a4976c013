"""The source protocol and its errors."""

from __future__ import annotations

from typing import Literal, Protocol

import cv2
import numpy as np

from edge.types import U8, Frame

#: A source's quarter turn, degrees clockwise (``source.rotate``).
Rotate = Literal[0, 90, 180, 270]

_CW, _CCW, _HALF = cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE, cv2.ROTATE_180

#: ``(rotate, mirror)`` -> OpenCV's steps: ``("rotate", cv2.ROTATE_*)``, ``("flip", code)``
#: or ``("transpose", 0)``. One step each where one exists (a mirrored quarter turn is a
#: transpose, a mirrored half turn a vertical flip: against ``cv2.rotate`` then a left-right
#: flip of the turned frame, 0.7 against 2.8-4.4 ms and 0.2 against 2.1-3.9 ms at 1280x720);
#: the same pixels as ``cv2.rotate`` then ``cv2.flip(.., 1)`` (tests/test_rotate.py). At
#: 1280x720 on a loaded 2-core x86 host (medians of runs of 15): 90 and 270 0.8-2.1 ms, 180
#: 0.3-0.4 ms, the mirror alone 0.4-0.6 ms, 270 with the mirror 1.8-4.3 ms.
_TURNS: dict[tuple[int, bool], tuple[tuple[str, int], ...]] = {
    (0, False): (), (0, True): (("flip", 1),),
    (90, False): (("rotate", _CW),), (90, True): (("transpose", 0),),
    (180, False): (("rotate", _HALF),), (180, True): (("flip", 0),),
    (270, False): (("rotate", _CCW),), (270, True): (("rotate", _CW), ("flip", 0)),
}


def turn(image: U8, rotate: Rotate = 0, mirror: bool = False) -> U8:
    """A camera's frame turned upright as it is mounted (``source.rotate``, ``source.mirror``).

    Turned by ``rotate`` degrees clockwise, then mirrored left to right when ``mirror``: a
    camera mounted upside down is ``rotate = 180``; one turned a quarter clockwise to frame a
    corridor in portrait delivers people lying on their right side, and ``rotate = 90`` stands
    them up (``rotate = 270`` for a quarter counter-clockwise). A frame point ``(x, y)``
    (pixel centres) of a ``W`` x ``H`` image is ``(H - 1 - y, x)`` after ``90``,
    ``(W - 1 - x, H - 1 - y)`` after ``180`` and ``(y, W - 1 - x)`` after ``270``. OpenCV
    does it in 0.2-2 ms for a 1280x720 frame (:data:`_TURNS`).

    Args:
        image: (H, W, 3) uint8 BGR; not modified.
        rotate: 0, 90, 180 or 270.
        mirror: Flip left to right after the turn.

    Returns:
        (H, W, 3) for 0 and 180, (W, H, 3) for 90 and 270, uint8 BGR, C-contiguous; ``image``
        itself when there is nothing to do.

    Raises:
        ValueError: For another angle.
    """
    if rotate not in (0, 90, 180, 270):
        raise ValueError(f"rotate {rotate!r}: expected 0, 90, 180 or 270 (degrees clockwise)")
    for step, code in _TURNS[(rotate, bool(mirror))]:
        if step == "rotate":
            image = np.asarray(cv2.rotate(image, code), np.uint8)
        elif step == "flip":
            image = np.asarray(cv2.flip(image, code), np.uint8)
        else:
            image = np.asarray(cv2.transpose(image), np.uint8)
    return image


class SourceError(RuntimeError):
    """A source cannot deliver frames: it cannot be opened, or it broke mid-way."""


class SourceSilentError(SourceError):
    """A live source delivered no frame within the wait (its device is away or restarting).

    Not an end: the source keeps reconnecting by itself, and the caller reports the outage and
    asks again.
    """


class SourceEnd(Exception):  # noqa: N818 - an end, not an error
    """A finite source has no more frames."""


class Source(Protocol):
    """Something that delivers frames.

    Attributes:
        name: What the source is, for logs and reports.
        live: True for cameras and streams (newest frame only; may drop frames).
        fps: Nominal frame rate, Hz, when known.
        frame_count: Number of frames of a finite source, when known.
        dropped: Frames captured but never delivered (live sources), or unreadable and skipped.
    """

    name: str
    live: bool
    fps: float | None
    frame_count: int | None

    @property
    def dropped(self) -> int:
        """Frames lost so far."""
        ...

    def read(self, timeout: float | None = None) -> Frame:
        """The next frame (file) or the newest frame not yet read (live).

        Raises:
            SourceEnd: A finite source is exhausted.
            SourceError: The source broke (e.g. a truncated video) or stayed dead past timeout.
        """
        ...

    def close(self) -> None:
        """Releases the device or file; safe to call twice."""
        ...
