"""End to end: the real pipeline and realtime scheduler on frames of n real people.

Frames come from :class:`~edge.bench.people.PacedSource` at a fixed rate, stamped at capture;
:func:`edge.scheduler.run_realtime` runs the detector in its own thread at its configured rate
and the core at the feed rate, on the newest frame. For each annotation the time from the
frame's capture stamp to the annotation being handed on (after the sinks) is the latency. The
first ``warmup_s`` seconds (interpreter warm-up, tracks being confirmed) are left out of every
figure. fps is annotations per second of the measured window: it cannot exceed the feed rate,
so the core's own step time is reported too (``core_ms``), which says how much headroom is left.
:func:`run_interleaved` runs several scenarios in interleaved chunks (each with a fresh pipeline
and its own warm-up), so that load from elsewhere that comes and goes spreads over them all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.bench.host import Monitor
from edge.bench.people import ComposedFrames, PacedSource
from edge.config import Config
from edge.pipeline import Pipeline, StepResult, build_pipeline
from edge.runtime import Manifest
from edge.scheduler import RunStats, run_realtime
from edge.types import Frame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class E2ESettings:
    """How one end-to-end scenario runs.

    Attributes:
        landmark: Landmark variant.
        precision: Precision of the landmark model (and the detector, when it has it).
        threads: Interpreter threads per model.
        feed_fps: Frames per second delivered (and core ticks per second).
        detector_hz: Detector runs per second.
        seconds: Measured seconds per scenario.
        warmup_s: Seconds run before measuring.
        budgets: Stage budgets, fps (``detector``, ``pose2d``, ``lifter``).
    """

    landmark: str
    precision: str
    threads: int
    feed_fps: float
    detector_hz: float
    seconds: float
    warmup_s: float
    budgets: dict[str, float]


def make_config(s: E2ESettings, manifest: Manifest, max_persons: int) -> Config:
    """The pipeline configuration of a scenario (no outputs; tracking for ``max_persons``)."""
    det_prec = s.precision if any(e.role == "detector" and e.precision == s.precision
                                  for e in manifest.models.values()) else None
    if det_prec is None:
        det_prec = next(e.precision for e in manifest.models.values() if e.role == "detector")
    data: dict[str, Any] = Config().model_dump()
    data["models"].update(landmark=s.landmark, precision=s.precision,
                          detector_precision=det_prec, threads=s.threads, dir=manifest.folder)
    if "lifter" in data["models"] and not any(e.role == "lifter"
                                              for e in manifest.models.values()):
        data["models"]["lifter"] = "world"
    data["scheduler"].update(mode="realtime", rate_hz=s.feed_fps, detector_hz=s.detector_hz,
                             budget_detector_fps=s.budgets["detector"],
                             budget_pose2d_fps=s.budgets["pose2d"],
                             budget_pose3d_fps=s.budgets["lifter"])
    data["tracking"]["max_persons"] = max(1, min(32, max_persons))
    data["output"].update(jsonl=False, video=False, stdout=False)
    return Config.model_validate(data)


def _warm(pipeline: Pipeline, frames: ComposedFrames) -> None:
    """Runs every interpreter once (first invokes are slow), then forgets all state."""
    f = Frame(frames.image(0), 0, time.monotonic_ns(), time.time())
    pipeline.core.step(f, pipeline.detect(f))
    pipeline.core.reset()


class _Totals:
    """What the chunks of one scenario add up to."""

    def __init__(self, frames: ComposedFrames, s: E2ESettings) -> None:
        self.frames = frames
        self.s = s
        self.measured = RunStats.with_budgets(s.budgets["detector"], s.budgets["pose2d"],
                                              s.budgets["lifter"])
        self.latencies: list[float] = []
        self.persons: list[int] = []
        self.window_s = 0.0
        self.dropped = 0
        self.overrun = 0
        self.monitors: list[dict[str, Any]] = []
        self.models: dict[str, str] = {}
        self.detector_precision: str | None = None

    def summary(self) -> dict[str, Any]:
        """The scenario's figures (``e2e[]`` of the bench schema)."""
        s, frames, persons = self.s, self.frames, self.persons
        lat = np.asarray(self.latencies, np.float64)
        st = self.measured.summary()["stages"]
        temps = [m["temp_max_c"] for m in self.monitors if m["temp_max_c"] is not None]
        throttled = [m["throttled"] for m in self.monitors if m["throttled"] is not None]
        bits = 0
        for t in throttled:
            bits |= t
        return {
            "people": frames.people,
            "models": self.models,
            "grid": [frames.rows, frames.cols],
            "person_px": frames.out_tile if frames.small else None,
            "frame_size": [frames.shape[1], frames.shape[0]],
            "landmark": s.landmark, "precision": s.precision,
            "detector_precision": self.detector_precision,
            "threads": s.threads, "feed_fps": s.feed_fps, "detector_hz": s.detector_hz,
            "chunks": len(self.monitors),
            "seconds": round(self.window_s, 3), "frames": int(lat.size),
            "frames_dropped": self.dropped, "ticks_overrun": self.overrun,
            "fps": round(lat.size / self.window_s, 2) if lat.size and self.window_s else 0.0,
            "latency_ms": None if not lat.size else {
                "p50": round(float(np.percentile(lat, 50)), 2),
                "p90": round(float(np.percentile(lat, 90)), 2),
                "p99": round(float(np.percentile(lat, 99)), 2),
                "max": round(float(lat.max()), 2)},
            "people_seen": {"mean": round(float(np.mean(persons)), 3) if persons else 0.0,
                            "min": int(min(persons)) if persons else 0,
                            "max": int(max(persons)) if persons else 0},
            "core_ms": {k: st[k] for k in ("pose2d", "pose3d", "track", "total")},
            "detector_ms": st["detect"],
            "peak_rss_mb": max(m["peak_rss_mb"] for m in self.monitors),
            "temp_max_c": max(temps) if temps else None,
            "temp_start_c": self.monitors[0]["temp_start_c"],
            "throttled": bits if throttled else None,
            "load_start": self.monitors[0]["load_start"],
            "load_end": self.monitors[-1]["load_end"],
        }


def _run_chunk(totals: _Totals, seconds: float, manifest: Manifest,
               on_tick: Callable[[float, int], None] | None) -> None:
    """Builds a fresh pipeline, runs it for ``warmup_s + seconds`` and adds to ``totals``."""
    s, frames = totals.s, totals.frames
    config = make_config(s, manifest, frames.people)
    pipeline = build_pipeline(config, manifest=manifest)
    totals.models = dict(pipeline.core.models)
    totals.detector_precision = config.models.detector_precision
    _warm(pipeline, frames)
    stop = threading.Event()  # run_realtime sets it when it ends: one per chunk
    source = PacedSource(frames, s.feed_fps, n_frames=round((s.warmup_s + seconds) * s.feed_fps),
                         stop=stop)
    stats = RunStats.with_budgets(s.budgets["detector"], s.budgets["pose2d"],
                                  s.budgets["lifter"])
    done_ns: list[int] = []
    t_start = [0]

    def on_step(frame: Frame, result: StepResult) -> None:
        now = time.monotonic_ns()
        if not t_start[0]:
            t_start[0] = frame.t_capture_ns
        if frame.t_capture_ns - t_start[0] < s.warmup_s * 1e9:
            return
        latency = (now - frame.t_capture_ns) / 1e6
        totals.latencies.append(latency)
        totals.persons.append(result.annotation.n_persons)
        done_ns.append(now)
        totals.measured.add(result.annotation, result.times_ms)
        if on_tick is not None:
            on_tick(latency, result.annotation.n_persons)

    with Monitor() as mon:
        run_realtime(source, pipeline.core, pipeline.detect, [], stats, rate_hz=s.feed_fps,
                     detector_hz=s.detector_hz, stop=stop, on_step=on_step)
    # The measured window: from the first measured annotation to the last, plus one period.
    if len(done_ns) >= 2:
        totals.window_s += (done_ns[-1] - done_ns[0]) / 1e9 * len(done_ns) / (len(done_ns) - 1)
    elif done_ns:
        totals.window_s += 1.0 / s.feed_fps
    totals.dropped += stats.frames_dropped
    totals.overrun += stats.ticks_overrun
    totals.monitors.append(mon.summary())


def run_scenario(frames: ComposedFrames, s: E2ESettings, manifest: Manifest,
                 on_tick: Callable[[float, int], None] | None = None) -> dict[str, Any]:
    """Runs one scenario in one piece and summarises it (``e2e[]`` of the bench schema).

    Args:
        frames: The composed frames (their ``people`` is the scenario's).
        s: Settings.
        manifest: The models.
        on_tick: Called from the core loop after each measured annotation with its latency
            (ms) and the number of people in it (the sustained run records these).

    Returns:
        fps, latency percentiles, people seen, drops, stage timings, RSS, temperature, load.
    """
    totals = _Totals(frames, s)
    _run_chunk(totals, s.seconds, manifest, on_tick)
    return totals.summary()


def run_interleaved(scenarios: Sequence[tuple[ComposedFrames, E2ESettings]],
                    manifest: Manifest, rounds: int = 2,
                    progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Runs several scenarios in ``rounds`` interleaved chunks each and summarises them.

    Each scenario's ``seconds`` is split into ``rounds`` chunks, and the chunks run round by
    round (1, 2, 4, 6 people, then 1, 2, 4, 6 again...), so that load from elsewhere that comes
    and goes during the run spreads over all scenarios instead of spoiling one: on a shared
    machine the ratios between scenarios are then worth more than any one figure.

    Args:
        scenarios: Frames and settings of each scenario.
        manifest: The models.
        rounds: Chunks per scenario (>= 1); every chunk has its own warm-up.
        progress: Called with a line before each chunk.

    Returns:
        One summary per scenario, in order.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    totals = [_Totals(f, s) for f, s in scenarios]
    for r in range(rounds):
        for t in totals:
            if progress is not None:
                progress(f"end to end, round {r + 1}/{rounds}: {t.frames.people} people, "
                         f"{t.s.landmark}/{t.s.precision}, {t.s.threads} threads, "
                         f"{t.s.warmup_s + t.s.seconds / rounds:.0f} s")
            _run_chunk(t, t.s.seconds / rounds, manifest, None)
    return [t.summary() for t in totals]
