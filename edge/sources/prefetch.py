"""Reading a finite source ahead, on its own thread, so that decoding overlaps processing.

Every-frame and image runs process each frame of a file in order on one thread. Without this,
that thread also decodes: the demo clip's 230 H.264 frames (1768x994) take about 1 s to decode
out of an 8 s run. :class:`Prefetcher` decodes the next frames meanwhile (OpenCV's decoder
releases the GIL), keeps at most ``depth`` of them, and hands them over in order, so a run's
output is unchanged. The source's own end and errors arrive in order too: a truncated file
still yields every frame before the damage, then its :class:`~edge.sources.base.SourceError`.

It may also run a function of each frame on its thread as it decodes (``ahead``): an
every-frame run's detector, whose result for a frame depends on that frame alone (and the
order of the calls, which is kept), so the detections are computed while the core processes
the frames before it, with the same results.

Written by hand (not ``concurrent.futures``): a bounded queue with an end marker and a stop
flag is all it takes, and the thread must be joined before the source is closed (OpenCV must not
release a capture another thread is reading).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from edge.sources.base import Source, SourceEnd
from edge.types import Frame

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Seconds between checks of the stop flag while the queue is full.
_POLL_S = 0.05


class Prefetcher(Generic[T]):
    """A finite source read ahead by a thread of its own (see the module docstring).

    Use as a context manager (or :meth:`start` / :meth:`stop`); it does not close the source.
    One consumer thread at a time.

    Args:
        source: A finite source (a file or a folder of images).
        depth: Frames decoded ahead at most (>= 1); each holds one frame's pixels.
        ahead: Called on the reading thread with each frame, in order; its result comes with
            the frame (:meth:`read_with`). Its exceptions reach the consumer in order, as the
            source's do.

    Raises:
        ValueError: When ``depth`` is below 1 or the source is live (a live source keeps only
            its newest frame by itself; reading it ahead would only add latency).
    """

    def __init__(self, source: Source, depth: int = 2,
                 ahead: Callable[[Frame], T] | None = None) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        if source.live:
            raise ValueError(f"source {source.name} is live: it is not read ahead")
        self.source = source
        self.name = source.name
        self.live = False
        self.fps = source.fps
        self.frame_count = source.frame_count
        self.ahead = ahead
        self._queue: queue.Queue[tuple[Frame, T | None] | BaseException] = queue.Queue(
            maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._end: BaseException | None = None

    @property
    def dropped(self) -> int:
        """The source's own count (read it after :meth:`stop` for a final figure)."""
        return self.source.dropped

    def start(self) -> Prefetcher[T]:
        """Starts the reading thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._read_ahead, name="prefetch",
                                            daemon=True)
            self._thread.start()
        return self

    def _put(self, item: tuple[Frame, T | None] | BaseException) -> bool:
        """Queues ``item``, waiting for room; False when stopped meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _read_ahead(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.source.read()
                result = self.ahead(frame) if self.ahead is not None else None
            except BaseException as e:  # handed to the consumer, in order
                self._put(e)
                return
            if not self._put((frame, result)):
                return

    def read(self, timeout: float | None = None) -> Frame:
        """The next frame of the source, in order.

        Args:
            timeout: Unused (a file source does not wait); kept for the source protocol.

        Raises:
            SourceEnd: After the last frame (and on every later call).
            SourceError: As the source raised it, after every frame before it.
        """
        return self.read_with()[0]

    def read_with(self) -> tuple[Frame, T | None]:
        """The next frame and what ``ahead`` returned for it (None without ``ahead``).

        Raises:
            SourceEnd: After the last frame (and on every later call).
            Exception: What the source or ``ahead`` raised, after every frame before it.
        """
        if self._end is not None:
            raise self._end
        if self._thread is None:
            self.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._end = item
            raise item
        return item

    def stop(self) -> None:
        """Ends the reading thread and waits for it (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._end is None:
            self._end = SourceEnd(self.name)

    def close(self) -> None:
        """Stops reading ahead; the source itself is closed by its owner."""
        self.stop()

    def __enter__(self) -> Prefetcher[T]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
