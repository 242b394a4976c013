"""Running the pipeline over a source: the fixed-rate realtime loop and the deterministic loop.

Realtime (:func:`run_realtime`): a reader thread keeps only the newest frame of the source (a
file is paced at its own frame rate, as a camera would deliver it); a detector thread runs the
detector on the newest frame at ``detector_hz`` and posts its detections; the core loop ticks at
``rate_hz``, takes the newest frame and the detections posted since the last tick (merged,
:func:`combine_results`), runs the stateful core once and
hands the annotation to the sinks. A tick that overruns is not queued behind: the next tick
starts from the newest frame. Frames never processed are counted as dropped. The first tick waits
for the detector's first result (at most :data:`WARM_START_S`), as MediaPipe's graphs run the
detector before the first landmarks: a cold core would publish nobody for the first detector run.

Every-frame (:func:`run_every_frame`): every frame of a file, in order, with the detector on
frames whose index is a multiple of ``detector_every``. A reading thread decodes the file and
runs the detector a few frames ahead of the core (in frame order, so the results are those of
running it in line): reruns give identical annotations.

Image (:func:`run_images`): independent still images, the detector on every one, nothing
carried over from one image to the next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.annotation import Annotation
from edge.detect.tiles import merge_detections
from edge.pipeline import StepResult
from edge.sinks.base import Sink
from edge.sources.base import Source, SourceEnd, SourceSilentError
from edge.sources.prefetch import Prefetcher
from edge.types import DetectorResult, Frame

logger = logging.getLogger(__name__)

STAGES = ("detect", "pose2d", "pose3d", "track", "total")

#: Frames a file is decoded (and detected) ahead in every-frame and image runs: enough for
#: the reading thread to finish a detector run while the core works on the frames before.
PREFETCH_FRAMES = 3

#: Seconds the realtime loop's first tick waits at most for the detector's first result. Without
#: the wait, the ticks before that result publish nobody: realtime runs of the demo clip on the
#: 2-core VM with two other busy processes published nobody until frame 3-5 (the man is in view
#: from frame 0), seeded replays of a loaded host until frame 0-7.
WARM_START_S = 2.0


class Core(Protocol):
    """The stateful core: one frame (and maybe fresh detections) in, one annotation out."""

    def step(self, frame: Frame, detected: DetectorResult | None) -> StepResult:
        """Processes one frame."""
        ...


Detector = Callable[[Frame], DetectorResult]
OnStep = Callable[[Frame, StepResult], None]


@dataclass
class StageStat:
    """Timings of one stage against its budget.

    Attributes:
        name: Stage name.
        budget_fps: Runs per second the design allows this stage (None: no budget).
        window: Recent durations kept for percentiles, ms.
    """

    name: str
    budget_fps: float | None = None
    window: deque[float] = field(default_factory=lambda: deque(maxlen=2048))
    count: int = 0
    total_ms: float = 0.0
    within: int = 0

    def record(self, ms: float) -> None:
        """Adds one run of ``ms`` milliseconds."""
        self.window.append(ms)
        self.count += 1
        self.total_ms += ms
        if self.budget_fps is None or ms <= 1000.0 / self.budget_fps:
            self.within += 1

    def summary(self) -> dict[str, Any]:
        """Count, mean/p50/p90 ms, implied fps, budget and share of runs within it."""
        if not self.count:
            return {"runs": 0, "mean_ms": None, "p50_ms": None, "p90_ms": None, "fps": None,
                    "budget_fps": self.budget_fps, "within_budget": None}
        w = np.asarray(self.window, np.float64)
        mean = self.total_ms / self.count
        return {"runs": self.count, "mean_ms": round(mean, 3),
                "p50_ms": round(float(np.percentile(w, 50)), 3),
                "p90_ms": round(float(np.percentile(w, 90)), 3),
                "fps": round(1000.0 / mean, 2) if mean > 0 else None,
                "budget_fps": self.budget_fps,
                "within_budget": round(self.within / self.count, 4)}


@dataclass
class RunStats:
    """What a run did: frames, people, drops, per-stage timings, and the source's state.

    Owned by the scheduler: the core thread writes it (:meth:`add`), the reader thread counts
    frames read and the source's state, and anyone else reads a consistent copy with
    :meth:`summary` (taken under the lock; never iterate ``stages`` from another thread).

    Attributes:
        source_state: ``ok``, or ``lost`` while a live source delivers nothing (it reconnects).
        source_outages: How many times a live source was lost.
        source_error: Why it was last lost.
    """

    stages: dict[str, StageStat]
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    ticks_overrun: int = 0
    person_frames: int = 0
    max_persons: int = 0
    wall_s: float = 0.0
    error: str | None = None
    source_state: str = "ok"
    source_outages: int = 0
    source_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # Monotonic times of the latest processed frames, for the current rate.
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=512), repr=False,
                                  compare=False)

    @classmethod
    def with_budgets(cls, detector_fps: float, pose2d_fps: float, pose3d_fps: float) -> RunStats:
        """Empty stats with the design's stage budgets (runs per second)."""
        budgets = {"detect": detector_fps, "pose2d": pose2d_fps, "pose3d": pose3d_fps}
        return cls({s: StageStat(s, budgets.get(s)) for s in STAGES})

    def add(self, annotation: Annotation, times_ms: dict[str, float]) -> None:
        """Accounts for one processed frame."""
        with self.lock:
            self._recent.append(time.monotonic())
            self.frames_processed += 1
            self.person_frames += annotation.n_persons
            self.max_persons = max(self.max_persons, annotation.n_persons)
            for k, v in times_ms.items():
                if k in self.stages:
                    self.stages[k].record(v)

    def current_fps(self, window_s: float = 5.0) -> float | None:
        """Frames processed per second over the last ``window_s`` seconds (None before two).

        The same figure for every reader, however often they ask (MQTT stats, HTTP, metrics).
        """
        now = time.monotonic()
        with self.lock:
            recent = [t for t in self._recent if now - t <= window_s]
        if len(recent) < 2:
            return None
        span = max(now - recent[0], 1e-3)
        return len(recent) / span

    def source_lost(self, why: str) -> bool:
        """Marks a live source lost; True if it was not already."""
        with self.lock:
            self.source_error = why
            if self.source_state == "lost":
                return False
            self.source_state = "lost"
            self.source_outages += 1
            return True

    def source_back(self) -> bool:
        """Marks the source delivering again; True if it had been lost."""
        with self.lock:
            if self.source_state == "ok":
                return False
            self.source_state = "ok"
            return True

    def summary(self) -> dict[str, Any]:
        """A JSON-able, consistent snapshot (taken under the lock; any thread may call it)."""
        with self.lock:
            fps = self.frames_processed / self.wall_s if self.wall_s > 0 else None
            return {"frames_read": self.frames_read, "frames_processed": self.frames_processed,
                    "frames_dropped": self.frames_dropped, "ticks_overrun": self.ticks_overrun,
                    "person_frames": self.person_frames, "max_persons": self.max_persons,
                    "wall_s": round(self.wall_s, 3),
                    "fps": None if fps is None else round(fps, 2), "error": self.error,
                    "source": {"state": self.source_state, "outages": self.source_outages,
                               "error": self.source_error},
                    "stages": {k: s.summary() for k, s in self.stages.items()}}


def _emit(sinks: Sequence[Sink], frame: Frame, annotation: Annotation) -> None:
    for sink in sinks:
        sink.write(frame, annotation)


def run_every_frame(source: Source, core: Core, detector: Detector, sinks: Sequence[Sink],
                    stats: RunStats, *, detector_every: int = 6,
                    stop: threading.Event | None = None,
                    progress: Callable[[int], None] | None = None,
                    on_step: OnStep | None = None) -> RunStats:
    """Processes every frame of ``source`` in order (deterministic).

    The detector runs on frames whose index is a multiple of ``detector_every``. Errors of the
    source (a truncated file) propagate after the frames before them were written to the sinks.

    Args:
        source: A finite source.
        core: The stateful core.
        detector: Runs the person detector on a frame.
        sinks: Where annotations go.
        stats: Accumulates timings (returned).
        detector_every: Detector period in frames (>= 1).
        stop: Set to end early.
        progress: Called with the number of frames processed so far.
        on_step: Called after each frame with its result (events, for instance).

    Returns:
        ``stats``.
    """
    if detector_every < 1:
        raise ValueError(f"detector_every must be >= 1, got {detector_every}")

    def detect(frame: Frame) -> DetectorResult | None:
        return detector(frame) if frame.frame_id % detector_every == 0 else None

    def step(frame: Frame, detected: DetectorResult | None) -> StepResult:
        return core.step(frame, detected)

    return _run_in_order(source, detect, step, sinks, stats, stop, progress, on_step)


def _run_in_order(source: Source, detect: Callable[[Frame], DetectorResult | None],
                  step: Callable[[Frame, DetectorResult | None], StepResult],
                  sinks: Sequence[Sink], stats: RunStats, stop: threading.Event | None,
                  progress: Callable[[int], None] | None, on_step: OnStep | None) -> RunStats:
    """Every frame of a finite source in order: ``detect``, ``step``, then the sinks.

    A file is decoded ahead on a thread of its own (:class:`~edge.sources.prefetch.Prefetcher`,
    ``PREFETCH_FRAMES`` frames), which also runs ``detect`` on each frame as it is decoded: the
    detector's result for a frame depends on that frame alone and on the order of the calls
    (the tile rotation), both kept, so decoding and detection overlap the core's work on the
    frames before, with the same results. ``step`` and the sinks run in this thread. A live
    source is read and detected in this thread.
    """
    t0 = time.perf_counter()
    reader = (Prefetcher(source, PREFETCH_FRAMES, ahead=detect).start() if not source.live
              else None)
    try:
        while stop is None or not stop.is_set():
            try:
                if reader is not None:
                    frame, detected = reader.read_with()
                else:
                    frame = source.read()
                    detected = detect(frame)
            except SourceEnd:
                break
            stats.frames_read += 1
            result = step(frame, detected)
            _emit(sinks, frame, result.annotation)
            stats.add(result.annotation, result.times_ms)
            if on_step is not None:
                on_step(frame, result)
            if progress is not None:
                progress(stats.frames_processed)
    finally:
        if reader is not None:
            reader.stop()
        stats.wall_s = time.perf_counter() - t0
        stats.frames_dropped = source.dropped
    return stats


class ResettableCore(Core, Protocol):
    """A core that can forget everything between independent images."""

    def reset(self) -> None:
        """Forgets every track, filter and timestamp."""
        ...


def run_images(source: Source, core: ResettableCore, detector: Detector, sinks: Sequence[Sink],
               stats: RunStats, *, stop: threading.Event | None = None,
               progress: Callable[[int], None] | None = None,
               on_step: OnStep | None = None) -> RunStats:
    """Processes still images, each on its own (MediaPipe's IMAGE running mode).

    For every image the core is reset (no track, filter or timestamp carries over), the
    detector runs on it, and the core's step publishes whoever was found at once: an image
    core has no confirmation tick and no smoothing (see ``edge.pipeline.build_pipeline``).
    Images may differ in size.

    Args:
        source: A finite source of independent images.
        core: The stateful core, reset before every image.
        detector: Runs the person detector on a frame (every image).
        sinks: Where annotations go.
        stats: Accumulates timings (returned).
        stop: Set to end early.
        progress: Called with the number of images processed so far.
        on_step: Called after each image with its result.

    Returns:
        ``stats``.
    """
    def step(frame: Frame, detected: DetectorResult | None) -> StepResult:
        core.reset()
        return core.step(frame, detected)

    return _run_in_order(source, detector, step, sinks, stats, stop, progress, on_step)


#: :func:`combine_results`: boxes of two results overlapping by more than this IoU are one
#: person seen twice; the better scored is kept (the detectors' own NMS threshold).
COMBINE_NMS_IOU = 0.5


def combine_results(results: Sequence[DetectorResult]) -> DetectorResult | None:
    """The detector results that reached one core tick, as one.

    The detector runs at its own rate, one view of the frame a run (the whole frame or a
    tile, ``edge.detect.tiles``), so when a tick takes longer than a run two or more results
    wait for it. Keeping only the newest threw the others' people away: a tile's empty result
    replaced the whole frame's that found everyone (demo replays: the man, in view from frame
    0, first published at frame 14). Their detections are merged (hard NMS at
    :data:`COMBINE_NMS_IOU`) and stamped with the oldest frame's time: each detection is
    then compared with the tracks' regions of that time, at most a detector period older
    than its own.

    Args:
        results: Results in arrival order (oldest first); may be empty.

    Returns:
        One result (frame and time of the oldest, the runs' summed ms), or None if none.
    """
    if not results:
        return None
    if len(results) == 1:
        return results[0]
    first = min(results, key=lambda r: r.t_s)
    return DetectorResult(merge_detections([r.detections for r in results], COMBINE_NMS_IOU),
                          first.frame_id, first.t_s, sum(r.ms for r in results))


class _Newest:
    """A one-slot mailbox: ``put`` replaces, ``take`` empties; counts replaced items."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self.replaced = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if self._item is not None:
                self.replaced += 1
            self._item = item
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Any:
        with self._cond:
            if self._item is None and timeout:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def peek(self) -> Any:
        with self._cond:
            return self._item

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _Results:
    """The detector's results waiting for the core.

    ``put`` adds one, ``take`` returns them merged (:func:`combine_results`) and empties.
    Holds at most :data:`MAX_WAITING`, the oldest dropped beyond (a core stalled for that
    many detector runs).
    """

    MAX_WAITING = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[DetectorResult] = deque(maxlen=self.MAX_WAITING)

    def put(self, item: DetectorResult) -> None:
        with self._lock:
            self._items.append(item)

    def take(self) -> DetectorResult | None:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return combine_results(items)


#: The longest a realtime reader waits on a silent live source before it looks at the stop
#: event again, s.
READ_SLICE_S = 0.25


def run_realtime(source: Source, core: Core, detector: Detector, sinks: Sequence[Sink],
                 stats: RunStats, *, rate_hz: float = 30.0, detector_hz: float = 5.0,
                 stop: threading.Event | None = None, read_timeout_s: float = 10.0,
                 on_step: OnStep | None = None, on_idle: Callable[[], None] | None = None,
                 on_source: Callable[[str, str | None], None] | None = None) -> RunStats:
    """Runs the fixed-rate loop until a file source ends or ``stop`` is set.

    A live source never ends the run: when it is silent for ``read_timeout_s`` (unplugged,
    rebooting, off the network) it is marked lost in ``stats`` and ``on_source("lost", why)``
    is called; the source goes on reconnecting by itself, and its first frame back calls
    ``on_source("back", None)``. The core loop keeps ticking meanwhile (``on_idle`` each empty
    tick), so a watchdog pinged from it sees a healthy loop, not a stall.

    Args:
        source: Any source; a file is paced at its frame rate.
        core: The stateful core (called only from this thread).
        detector: Runs the person detector on a frame (called from the detector thread).
        sinks: Where annotations go (called from this thread).
        stats: Accumulates timings (returned).
        rate_hz: Core ticks per second.
        detector_hz: Detector runs per second.
        stop: Set to end the run; the current frame finishes first.
        read_timeout_s: A live source silent this long is reported lost.
        on_step: Called after each tick from the core loop with its result (events; a
            watchdog ping).
        on_idle: Called from the core loop on each tick that had no new frame.
        on_source: Called from the reader thread when a live source is lost (``"lost"``, the
            reason) or delivers again (``"back"``, None).

    Returns:
        ``stats``; ``stats.error`` says why the run ended early, if it did.
    """
    if rate_hz <= 0 or detector_hz <= 0:
        raise ValueError("rate_hz and detector_hz must be > 0")
    stop = stop if stop is not None else threading.Event()
    frames = _Newest()
    posted = _Results()
    finished = threading.Event()
    warm = threading.Event()  # the detector posted its first result (or ended)
    errors: list[BaseException] = []

    def reader() -> None:
        # A file is played on its own clock: each frame is let out at its time in the file
        # (``Frame.ts``: a variable-rate video keeps its pauses) after the first frame's.
        paced = not source.live and bool(source.fps)
        start: tuple[float, float] | None = None  # (perf_counter, ts) of the first frame
        # A silent source is waited for in slices, so a stop is seen within one (it waited the
        # whole read_timeout_s: a SIGTERM then took up to 10 s, and the video writer, told to
        # finish by the same signal, was gone by then).
        slice_s = min(READ_SLICE_S, read_timeout_s)
        heard = time.monotonic()  # the last frame's arrival, or the reader's start
        try:
            while not stop.is_set():
                try:
                    frame = source.read(timeout=slice_s)
                except SourceEnd:
                    break
                except SourceSilentError:
                    silent = time.monotonic() - heard
                    if silent < read_timeout_s:
                        continue
                    err = getattr(source, "last_error", None)
                    why = (f"source {source.name}: no frame for {silent:.1f} s"
                           + (f" (last error: {err})" if err else ""))
                    if stats.source_lost(why):
                        logger.warning("%s; still reconnecting, the loop goes on", why)
                        if on_source is not None:
                            on_source("lost", why)
                    continue
                heard = time.monotonic()
                if stats.source_back():
                    logger.warning("source %s: frames again", source.name)
                    if on_source is not None:
                        on_source("back", None)
                stats.frames_read += 1
                if paced:
                    if start is None:
                        start = (time.perf_counter(), frame.ts)
                    else:
                        stop.wait(max(0.0, start[0] + frame.ts - start[1] - time.perf_counter()))
                frames.put(frame)
        except BaseException as e:  # surfaced to the caller through `errors`
            errors.append(e)
        finally:
            finished.set()
            frames.wake()

    def detect_loop() -> None:
        period = 1.0 / detector_hz
        next_t = time.perf_counter()
        last_id = -1
        try:
            while not stop.is_set() and not finished.is_set():
                frame = frames.peek() or last_frame[0]
                if frame is not None and frame.frame_id != last_id:
                    last_id = frame.frame_id
                    posted.put(detector(frame))
                    warm.set()
                next_t += period
                now = time.perf_counter()
                if next_t < now:
                    next_t = now
                stop.wait(next_t - now)
        except BaseException as e:
            errors.append(e)
            stop.set()
        finally:
            warm.set()

    last_frame: list[Frame | None] = [None]
    threads = [threading.Thread(target=reader, name="reader", daemon=True),
               threading.Thread(target=detect_loop, name="detector", daemon=True)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    period = 1.0 / rate_hz
    next_tick = time.perf_counter()
    warm_until = next_tick + WARM_START_S
    try:
        while not stop.is_set():
            if not warm.is_set() and time.perf_counter() < warm_until and not finished.is_set():
                # Warm start: the newest frame waits in the mailbox for the first detections
                # (frames replaced meanwhile count as dropped, as after any long tick).
                warm.wait(period)
                if on_idle is not None:
                    on_idle()
                continue
            frame: Frame | None = frames.take(timeout=period)
            if frame is None:
                if finished.is_set():
                    break
                if on_idle is not None:
                    on_idle()
                continue
            last_frame[0] = frame
            result = core.step(frame, posted.take())
            _emit(sinks, frame, result.annotation)
            stats.add(result.annotation, result.times_ms)
            if on_step is not None:
                on_step(frame, result)
            next_tick += period
            now = time.perf_counter()
            if now > next_tick:
                stats.ticks_overrun += 1
                next_tick = now
            else:
                stop.wait(next_tick - now)
    finally:
        stop.set()
        frames.wake()
        for th in threads:
            th.join(timeout=read_timeout_s + 5.0)
        stats.wall_s = time.perf_counter() - t0
        stats.frames_dropped = frames.replaced + source.dropped
    if errors:
        stats.error = f"{type(errors[0]).__name__}: {errors[0]}"
        raise errors[0]
    return stats
