"""A sink on its own thread behind a bounded queue, so that no sink can slow the core.

The core thread only enqueues (frame, annotation) pairs; a sender thread draws, encodes and
writes. Two policies for a full queue:

* **lossy** (live runs): the oldest pose frame is dropped and counted, so a slow disk or client
  costs frames of that sink only, never the core's rate;
* **lossless** (every-frame and image runs, whose files must hold every frame): the core waits
  for room, which is back-pressure, not loss.

An error in the sink is kept and raised, as :class:`~edge.sinks.base.SinkError`, by the next
``write`` or by ``close`` on the core thread, so failures still end the run as before.

Why by hand: ``queue.Queue`` has no drop-oldest policy, and the few lines here add it with one
lock; a library would bring a whole framework for it.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from pathlib import Path

from edge.annotation import Annotation
from edge.sinks.base import Sink, SinkError
from edge.types import Frame

logger = logging.getLogger(__name__)


class QueuedSink:
    """Wraps ``inner`` so that ``write`` returns at once (see the module docstring).

    Args:
        inner: The sink doing the work (called only from the sender thread).
        maxsize: Frames the queue holds (>= 1).
        lossless: Wait for room instead of dropping the oldest frame.
        name: For the thread and the logs.
        max_bytes: Also full when the queued frames' pixels reach this many bytes (at least
            one frame is always taken), so that big frames do not multiply the memory; None:
            only ``maxsize`` counts.
        nice: Niceness added to the sender thread (Linux, per thread; capped at 19), so that
            its drawing and encoding take only CPU time the core leaves over; 0: unchanged.
    """

    def __init__(self, inner: Sink, *, maxsize: int = 8, lossless: bool = False,
                 name: str = "sink", max_bytes: int | None = None, nice: int = 0) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
        if nice < 0:
            raise ValueError(f"nice must be >= 0 (a sink never outranks the core), got {nice}")
        self.inner = inner
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.nice = nice
        #: The sender thread's niceness once it runs (None before, or where unsupported).
        self.niceness: int | None = None
        self._bytes = 0
        self.lossless = lossless
        self.name = name
        self.dropped = 0
        self.written = 0
        self._items: collections.deque[tuple[Frame, Annotation]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._send, name=f"sink:{name}", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path | None:
        """The inner sink's output path, when it has one."""
        p = getattr(self.inner, "path", None)
        return p if isinstance(p, Path) else None

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, SinkError):
                raise err
            raise SinkError(f"{self.name}: {type(err).__name__}: {err}") from err

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Queues one frame (see the class docstring for a full queue).

        Raises:
            SinkError: The sink failed on an earlier frame, or it is closed.
        """
        with self._cond:
            self._raise_pending()
            if self._closing:
                raise SinkError(f"{self.name}: closed")
            if self.lossless:
                self._cond.wait_for(lambda: not self._full() or self._error is not None)
                self._raise_pending()
            else:
                while self._full():
                    old, _ = self._items.popleft()
                    self._bytes -= old.image.nbytes
                    self.dropped += 1
            self._items.append((frame, annotation))
            self._bytes += frame.image.nbytes
            self._cond.notify_all()

    def _full(self) -> bool:
        """Whether the queue has no room (called under the lock)."""
        if not self._items:
            return False
        return len(self._items) >= self.maxsize or (
            self.max_bytes is not None and self._bytes >= self.max_bytes)

    def _lower_priority(self) -> None:
        """Adds ``nice`` to the calling (sender) thread's niceness.

        Linux applies ``setpriority`` to one thread by its id; threads it starts later (an
        encoder's) inherit the value.
        """
        try:
            tid = threading.get_native_id()
            if self.nice:
                now = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, min(19, now + self.nice))
            self.niceness = os.getpriority(os.PRIO_PROCESS, tid)
        except (AttributeError, OSError) as e:  # not Linux/Unix: runs at the core's priority
            logger.debug("%s: priority unchanged (%s)", self.name, e)

    def _send(self) -> None:
        self._lower_priority()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._items) or self._closing)
                if not self._items:
                    return  # closing and drained
                frame, annotation = self._items.popleft()
                self._bytes -= frame.image.nbytes
                self._busy = True
                self._cond.notify_all()
            try:
                self.inner.write(frame, annotation)
            except BaseException as e:  # kept for the core thread; the rest is dropped
                logger.error("%s: %s", self.name, e)
                with self._cond:
                    self._error = e
                    self.dropped += len(self._items)
                    self._items.clear()
                    self._bytes = 0
                    self._busy = False
                    self._cond.notify_all()
                return
            with self._cond:
                self.written += 1
                self._busy = False
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until everything queued so far was written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: (not self._items and not self._busy)
                                       or self._error is not None or not self._thread.is_alive(),
                                       timeout)

    def close(self) -> None:
        """Writes what is queued, closes the inner sink; raises a pending sink error.

        Safe to call twice.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        try:
            self.inner.close()
        finally:
            with self._cond:
                self._raise_pending()
