"""Each stage alone: runs per second for every model, precision and thread count.

A *cell* is one stage run by one model at one thread count. Every cell is warmed up, then the
cells are run round-robin, one call each per round, so that a burst of load from elsewhere on a
shared machine hits all cells alike and the ratios between them stay meaningful. Per call:

* ``detector``: preprocess (letterbox, normalise) + invoke + decode (anchors, NMS, regions),
  for every detector model: BlazePose's (``detector`` role) and the whole-body box detector
  (``box_detector``, NanoDet), each on the whole frame. Their budget is the detector's: a
  detector run is one call of either (``[detector]`` makes one call per run), so each must
  keep up with ``budget_detector_fps``; issue 9 also asks for <= 25 ms a run at 1 thread
  (40 runs/s).
* ``pose2d``: one person: affine crop + invoke + back-projection (``PoseLandmarker``).
* ``lifter``: one person: the manifest's ``lifter`` models through ``edge.lift3d`` when there
  are any, and always the ``world`` path (the landmark model's own world landmarks re-rooted at
  the hips; no model of its own, so it is timed once, without threads or precision).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bench.host import load_average
from edge.detect import PoseDetector, decode, preprocess
from edge.detect.box import BoxPersonDetector, decode_box, preprocess_box
from edge.lift3d import WorldLandmarksStage
from edge.pose2d import PoseLandmarker, crop_regions, decode_landmarks
from edge.runtime import Manifest, ModelEntry, load_model
from edge.types import U8, Poses2D

logger = logging.getLogger(__name__)

STAGE_NAMES = ("detector", "pose2d", "lifter")
DEFAULT_BUDGETS = {"detector": 5.0, "pose2d": 55.0, "lifter": 450.0}


@dataclass
class Cell:
    """One stage x model x threads, with its timed call and recorded durations (ms).

    ``call`` runs the stage once and returns the durations of its parts in ms (may be empty).
    """

    stage: str
    model: str
    variant: str | None
    precision: str
    threads: int | None
    call: Callable[[], dict[str, float]]
    ms: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)

    def once(self) -> None:
        """Runs and records one call."""
        t0 = time.perf_counter()
        parts = self.call()
        self.ms.append((time.perf_counter() - t0) * 1e3)
        for k, v in parts.items():
            self.parts.setdefault(k, []).append(v)


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    """p10 / p50 / p90 / mean of durations in ms."""
    a = np.asarray(ms, np.float64)
    return {"p10": round(float(np.percentile(a, 10)), 4),
            "p50": round(float(np.percentile(a, 50)), 4),
            "p90": round(float(np.percentile(a, 90)), 4),
            "mean": round(float(a.mean()), 4)}


def _detector_call(det: PoseDetector, image: U8) -> Callable[[], dict[str, float]]:
    def call() -> dict[str, float]:
        t0 = time.perf_counter()
        tensor, lb = preprocess(image, det.config.input_size)
        t1 = time.perf_counter()
        out = det.model.run(tensor)
        t2 = time.perf_counter()
        decode(out["boxes"], out["scores"], det.anchors, lb, det.config)
        t3 = time.perf_counter()
        return {"preprocess": (t1 - t0) * 1e3, "invoke": (t2 - t1) * 1e3,
                "decode": (t3 - t2) * 1e3}
    return call


def _box_call(det: BoxPersonDetector, image: U8) -> Callable[[], dict[str, float]]:
    h, w = image.shape[:2]

    def call() -> dict[str, float]:
        t0 = time.perf_counter()
        tensor, lb = preprocess_box(image, det.config.input_size)
        t1 = time.perf_counter()
        out = det.model.run(tensor)
        t2 = time.perf_counter()
        decode_box(out["scores"], out["distances"], lb, (h, w), det.config,
                   (det.centres, det.strides))
        t3 = time.perf_counter()
        return {"preprocess": (t1 - t0) * 1e3, "invoke": (t2 - t1) * 1e3,
                "decode": (t3 - t2) * 1e3}
    return call


def _landmark_call(lm: PoseLandmarker, image: U8,
                   region: npt.NDArray[np.float32]) -> Callable[[], dict[str, float]]:
    regions = region.reshape(1, 5).astype(np.float32)

    def call() -> dict[str, float]:
        t0 = time.perf_counter()
        crops, affines = crop_regions(image, regions, lm.size)
        t1 = time.perf_counter()
        out = lm.run_crops(crops)
        t2 = time.perf_counter()
        decode_landmarks(out, affines, regions, lm.size)
        t3 = time.perf_counter()
        return {"crop": (t1 - t0) * 1e3, "invoke": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3}
    return call


def _lifter_call(entry: ModelEntry, threads: int, manifest: Manifest,
                 poses: Poses2D) -> Callable[[], dict[str, float]] | None:
    """The lifter's call, or None when ``edge.lift3d`` cannot run this model."""
    try:
        from edge import lift3d
    except ImportError as e:  # the lifter module is optional until it ships
        logger.warning("edge.lift3d cannot be imported (%s); lifter %s not measured", e,
                       entry.key)
        return None
    model = load_model(entry.key, threads, manifest)
    lifter = lift3d.Lifter(model)
    kp, conf = poses.keypoints[:1], poses.visibility[:1]
    if lifter.frames == 1:
        def call() -> dict[str, float]:
            lifter.lift(kp, conf)
            return {}
        return call
    temporal = lift3d.TemporalLifter(model)
    ids = [0]

    def call_t() -> dict[str, float]:
        temporal.lift(kp, conf, ids)
        return {}
    return call_t


def _world_call(poses: Poses2D) -> Callable[[], dict[str, float]]:
    stage = WorldLandmarksStage()
    ids = np.zeros(1, np.int64)
    one = poses[np.array([0], np.intp)]

    def call() -> dict[str, float]:
        stage(one, ids)
        return {}
    return call


def build_cells(manifest: Manifest, image: U8, *, threads: Sequence[int],
                precisions: Sequence[str], landmarks: Sequence[str],
                stages: Sequence[str] = STAGE_NAMES) -> tuple[list[Cell], list[str]]:
    """Loads every model to be measured and binds it to a real input.

    The 2D and lifter stages use the person the detector finds in ``image`` (the best one);
    when it finds none, a region over the image's centre stands in (noted).

    Args:
        manifest: The models.
        image: A frame with at least one person, (H, W, 3) uint8 BGR.
        threads: Interpreter thread counts.
        precisions: ``float`` and/or ``int8``; those the manifest lacks for a stage are skipped.
        landmarks: Landmark variants (``lite``, ``full``, ``heavy``).
        stages: Which of :data:`STAGE_NAMES` to measure.

    Returns:
        The cells and notes on what was skipped or substituted.
    """
    notes: list[str] = []
    cells: list[Cell] = []
    models = list(manifest.models.values())

    def pick(role: str, variant: str | None = None) -> list[ModelEntry]:
        return sorted((e for e in models if e.role == role and e.precision in precisions
                       and (variant is None or e.variant == variant)), key=lambda e: e.key)

    # A real person: the detector (first available) on the image.
    dets = pick("detector") or sorted((e for e in models if e.role == "detector"),
                                      key=lambda e: e.key)
    region: npt.NDArray[np.float32] | None = None
    if dets:
        found = PoseDetector(load_model(dets[0].key, 1, manifest))(image)
        if len(found):
            region = found.regions[0]
    if region is None:
        h, w = image.shape[:2]
        region = np.array([w / 2, h / 2, min(w, h), min(w, h), 0.0], np.float32)
        notes.append("the detector found nobody in the stage image: 2D and lifter measured on "
                     "a centre region")
    for e in pick("detector") if "detector" in stages else []:
        for t in threads:
            det = PoseDetector(load_model(e.key, t, manifest))
            cells.append(Cell("detector", e.key, e.variant, e.precision, t,
                              _detector_call(det, image)))
    boxes = pick("box_detector") or sorted((e for e in models if e.role == "box_detector"),
                                           key=lambda e: e.key)  # only its int8 file ships
    for e in boxes if "detector" in stages else []:
        for t in threads:
            box = BoxPersonDetector(load_model(e.key, t, manifest))
            cells.append(Cell("detector", e.key, e.variant, e.precision, t, _box_call(box, image)))
    poses: Poses2D | None = None
    for variant in landmarks:
        entries = pick("landmark", variant)
        if not entries:
            notes.append(f"no landmark model {variant!r} in {precisions} in the manifest")
        for e in entries:
            for t in threads:
                lm = PoseLandmarker(load_model(e.key, t, manifest))
                if poses is None:
                    poses = lm(image, region.reshape(1, 5))
                if "pose2d" in stages:
                    cells.append(Cell("pose2d", e.key, e.variant, e.precision, t,
                                      _landmark_call(lm, image, region)))
    if "lifter" in stages:
        if poses is None:
            notes.append("no landmark model measured: the lifter stage needs its 2D poses")
        else:
            lifters = pick("lifter")
            if not any(e.role == "lifter" for e in models):
                notes.append("no lifter in the manifest: the 3D stage is the landmark model's "
                             "world landmarks (measured as lifter 'world')")
            for e in lifters:
                for t in threads:
                    call = _lifter_call(e, t, manifest, poses)
                    if call is not None:
                        cells.append(Cell("lifter", e.key, e.variant, e.precision, t, call))
            cells.append(Cell("lifter", "world", None, "n/a", None, _world_call(poses)))
    return cells, notes


def measure(cells: Sequence[Cell], *, repeats: int, warmup: int,
            progress: Callable[[int, int], None] | None = None) -> None:
    """Warms every cell up, then runs them round-robin ``repeats`` times (records in place).

    Args:
        cells: What to run.
        repeats: Timed calls per cell (>= 1).
        warmup: Untimed calls per cell before (>= 0).
        progress: Called with (round done, rounds).
    """
    for c in cells:
        for _ in range(warmup):
            c.call()
    for r in range(repeats):
        for c in cells:
            c.once()
        if progress is not None:
            progress(r + 1, repeats)


def cell_result(cell: Cell, budget_fps: float | None, warmup: int,
                load: Sequence[float] | None) -> dict[str, Any]:
    """A measured cell as JSON (``stages[]`` of the bench schema)."""
    ms = percentiles(cell.ms)
    fps = {"p10": round(1000.0 / ms["p90"], 2), "p50": round(1000.0 / ms["p50"], 2),
           "p90": round(1000.0 / ms["p10"], 2)}
    ratio = None if not budget_fps else round(fps["p50"] / budget_fps, 3)
    return {
        "stage": cell.stage, "model": cell.model, "variant": cell.variant,
        "precision": cell.precision, "threads": cell.threads, "runs": len(cell.ms),
        "warmup": warmup, "ms": ms, "fps": fps,
        "parts_ms": {k: round(float(np.median(v)), 4) for k, v in cell.parts.items()},
        "budget_fps": budget_fps, "budget_ratio": ratio,
        "within_budget": None if ratio is None else ratio >= 1.0,
        "load_avg": list(load) if load is not None else load_average(),
    }
