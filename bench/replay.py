"""Realtime scheduling replayed deterministically: which frames a loaded host processes.

``edge.scheduler.run_realtime`` ticks on the newest frame: a tick that takes longer than a frame
period skips the frames captured meanwhile, and the detector thread runs on the newest frame at
its own rate, its result reaching the core at the first tick after it finishes. Which frames
are skipped, and how old a detection is when it arrives, depend on the host's load, so a run of
the real loop is not reproducible. This module draws those timings from a seeded generator
instead and replays the same schedule through the real pieces (``Pipeline.detect`` and
``PoseCore.step``, frames with their true capture times), in one thread: the tracker sees what
it would see on a loaded host, and a rerun gives the same annotations.

```sh
python -m bench.replay --source cache/crowd/clips/clip00.mp4 --out preds/rt/clip00 \
    --tick-ms 60 --det-ms 80 --jitter 0.5 --seed 0
```

writes ``annotations.jsonl`` (one line per processed frame, as realtime mode writes it) and
``schedule.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.config import Config
from edge.detect.tiles import TiledDetector
from edge.pipeline import Pipeline, StepResult, build_pipeline
from edge.scheduler import WARM_START_S, combine_results
from edge.types import U8, DetectorResult, Frame


@dataclass(frozen=True)
class Schedule:
    """Which frames a realtime run processes and when the detector's results arrive.

    Attributes:
        fps: Frame rate of the source, frames per second.
        processed: Frame indices the core ticks on, increasing.
        detections: ``(frame run on, frame of the tick that receives it)`` pairs, in run order;
            the receiving tick is a processed frame after the run's frame. Results that
            reach the same tick are merged (``edge.scheduler.combine_results``).
    """

    fps: float
    processed: tuple[int, ...]
    detections: tuple[tuple[int, int], ...]

    @property
    def dropped(self) -> int:
        """Frames before the last processed one that were never processed."""
        return (self.processed[-1] + 1 - len(self.processed)) if self.processed else 0


def realtime_schedule(n_frames: int, fps: float, *, tick_ms: float, det_ms: float,
                      detector_hz: float = 10.0, jitter: float = 0.0, seed: int = 0
                      ) -> Schedule:
    """The schedule of ``run_realtime`` on a host where a tick takes ``tick_ms``.

    A file is played at ``fps`` and the core ticks as fast as it can (``rate_hz`` >= ``fps``).

    Each tick and each detector run takes its nominal time times a log-normal factor of
    standard deviation ``jitter`` (0: exact), drawn from ``numpy.random.default_rng(seed)``.
    A tick starts on the newest frame captured by then (at least the next one); the detector
    starts every ``1 / detector_hz`` s (right away after an overrun) on the newest frame, and
    its result is taken by the first tick starting after it ends. The first tick waits for the
    first detector run (at most ``edge.scheduler.WARM_START_S``) and takes its result.

    Args:
        n_frames: Frames in the source.
        fps: Source frame rate, > 0.
        tick_ms: Nominal core tick duration, ms (> 0).
        det_ms: Nominal detector run duration, ms (> 0).
        detector_hz: Detector runs per second (> 0).
        jitter: Log-normal sigma of the durations (>= 0); 0.5 gives ticks of 0.4-2.7x nominal
            (5th-95th percentile), like a host shared with other jobs.
        seed: Seed of the durations.

    Returns:
        The schedule.

    Raises:
        ValueError: When a rate or duration is not positive.
    """
    if not (fps > 0 and tick_ms > 0 and det_ms > 0 and detector_hz > 0 and jitter >= 0):
        raise ValueError("realtime_schedule: fps, tick_ms, det_ms, detector_hz must be > 0 and "
                         "jitter >= 0")
    rng = np.random.default_rng(seed)

    def dur(ms: float) -> float:
        return ms / 1e3 * (float(rng.lognormal(0.0, jitter)) if jitter > 0 else 1.0)

    def newest(t: float) -> int:
        return math.floor(t * fps + 1e-9)  # frame k is captured at k / fps

    # The detector's runs first: (start frame, end time), independent of the core.
    runs: list[tuple[int, float]] = []
    t, last = 0.0, -1
    end_of_clip = n_frames / fps
    while t < end_of_clip:
        f = min(newest(t), n_frames - 1)
        t_next = t + 1.0 / detector_hz
        if f != last:
            last = f
            end = t + dur(det_ms)
            runs.append((f, end))
            t_next = max(t_next, end)
        t = t_next
    processed: list[int] = []
    starts: list[float] = []
    f, t = 0, 0.0
    if runs:  # the warm start: the first tick waits for the first detections
        t = min(runs[0][1], WARM_START_S)
        f = min(newest(t), n_frames - 1)
    while f < n_frames:
        processed.append(f)
        starts.append(t)
        t = max(t + dur(tick_ms), (f + 1) / fps)
        f = max(newest(t), f + 1)
    detections: list[tuple[int, int]] = []
    for j, (f_run, end) in enumerate(runs):
        # The result reaches a tick on a newer frame than the run's; the first run's (waited
        # for, at most WARM_START_S) may reach the very first tick, on the same frame.
        due, first_frame = (min(end, WARM_START_S), f_run) if j == 0 else (end, f_run + 1)
        k = next((i for i, s in enumerate(starts) if s >= due and processed[i] >= first_frame),
                 None)
        if k is not None:
            detections.append((f_run, processed[k]))
    return Schedule(fps, tuple(processed), tuple(detections))


def read_frames(path: Path, limit: int | None = None) -> Iterator[tuple[int, U8]]:
    """Every frame of a video file, or its first ``limit``: (H, W, 3) uint8 BGR, and index.

    Raises:
        ValueError: When the file cannot be opened.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"video {path}: cannot be opened")
    try:
        i = 0
        while limit is None or i < limit:
            ok, image = cap.read()
            if not ok:
                return
            yield i, np.ascontiguousarray(image)
            i += 1
    finally:
        cap.release()


def replay(pipeline: Pipeline, frames: Iterator[tuple[int, U8]], schedule: Schedule
           ) -> list[StepResult]:
    """Runs the real detector and core on ``schedule``'s frames, in one thread.

    Args:
        pipeline: A pipeline built for realtime mode (confirmation tick, smoothing); its core
            and its detector's tile rotation are reset first, so a replay does not depend on
            what the pipeline ran before.
        frames: ``(index, image)`` of the source in order (:func:`read_frames`).
        schedule: Which frames to process and when detections arrive.

    Returns:
        One step result per processed frame, in order.
    """
    pipeline.core.reset()
    if isinstance(pipeline.detector, TiledDetector):  # its rotation cursor: its only state
        pipeline.detector.reset()
    todo = set(schedule.processed)
    runs: dict[int, list[int]] = {}  # frame run on -> indices into schedule.detections
    for k, (f_run, _) in enumerate(schedule.detections):
        runs.setdefault(f_run, []).append(k)
    waiting: dict[int, list[DetectorResult]] = {}  # receiving frame -> results for it
    results: list[StepResult] = []
    last = schedule.processed[-1] if schedule.processed else -1
    for i, image in frames:
        if i > last:
            break
        frame = Frame(image, i, round(i / schedule.fps * 1e9), i / schedule.fps)
        for k in runs.get(i, []):
            waiting.setdefault(schedule.detections[k][1], []).append(pipeline.detect(frame))
        if i in todo:
            # Results due at this tick, merged (the scheduler's mailbox, combine_results).
            due = sorted(f for f in waiting if f <= i)
            got = combine_results([r for f in due for r in waiting.pop(f)])
            results.append(pipeline.core.step(frame, got))
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 on bad input)."""
    ap = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="video file")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--config", type=Path, help="TOML config (models, tracking, detector)")
    ap.add_argument("--tick-ms", type=float, default=60.0)
    ap.add_argument("--det-ms", type=float, default=80.0)
    ap.add_argument("--detector-hz", type=float, default=None,
                    help="default: the config's scheduler.detector_hz")
    ap.add_argument("--jitter", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from edge.config import load_config

    config = load_config(args.config) if args.config is not None else Config()
    config = Config.model_validate({**config.model_dump(),
                                    "models": {**config.models.model_dump(),
                                               "threads": args.threads}})
    cap = cv2.VideoCapture(str(args.source))
    if not cap.isOpened():
        print(f"error: video {args.source}: cannot be opened", file=sys.stderr)
        return 2
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    hz = args.detector_hz if args.detector_hz is not None else config.scheduler.detector_hz
    schedule = realtime_schedule(n, fps, tick_ms=args.tick_ms, det_ms=args.det_ms,
                                 detector_hz=hz, jitter=args.jitter, seed=args.seed)
    pipeline = build_pipeline(config, timings=False, mode="realtime")
    results = replay(pipeline, read_frames(args.source), schedule)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "annotations.jsonl").write_text(
        "".join(r.annotation.to_json() + "\n" for r in results))
    (args.out / "schedule.json").write_text(json.dumps(
        {**asdict(schedule), "dropped": schedule.dropped,
         "tracker": asdict(pipeline.core.tracker.stats)}) + "\n")
    print(f"{len(results)} of {n} frames processed ({schedule.dropped} dropped), "
          f"{len(schedule.detections)} detector runs delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
