"""The source protocol and its errors."""

from __future__ import annotations

from typing import Protocol

from edge.types import Frame


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
