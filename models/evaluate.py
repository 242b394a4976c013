"""Fidelity of a shipped model against the float original, and latency.

Fidelity is measured on held-out inputs only (see :mod:`models.data`), always against the
*original* file from the registry package, single-threaded (deterministic).

Bars (from the project brief):

* detector: after decoding and weighted NMS, every float detection is matched by exactly one
  shipped detection with IoU >= 0.85 and there are no extra ones, on every held-out frame;
* landmarks: mean 2D error over the body landmarks the float model calls visible
  (visibility > 0.5) <= 3.8 px on the 256 crop; presence agrees (both > 0.5 or both <= 0.5);
  world landmarks <= 15 mm mean.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.detect import DetectorConfig, Letterbox, decode, ssd_anchors
from edge.geometry import box_iou
from edge.runtime import create_interpreter
from edge.types import F32

BODY = 33
"""Body landmarks among the model's 39 (the rest are auxiliary)."""

DETECTOR_MIN_IOU = 0.85
LANDMARK_MAX_PX = 3.8
WORLD_MAX_MM = 15.0
BORDERLINE_SCORE = 0.55
"""A missed or extra detection scoring below this is reported as borderline."""


class Runner:
    """A single-input interpreter returning outputs by tensor name (batch 1)."""

    def __init__(self, model: bytes, threads: int = 1) -> None:
        self.interpreter = create_interpreter(model, threads)
        self._in = int(self.interpreter.get_input_details()[0]["index"])
        self._out = {str(d["name"]): int(d["index"])
                     for d in self.interpreter.get_output_details()}

    def __call__(self, x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Runs once on (1, H, W, 3) float32 ``x``; returns copies of the outputs by name."""
        self.interpreter.set_tensor(self._in, x)
        self.interpreter.invoke()
        return {k: np.array(self.interpreter.get_tensor(i)) for k, i in self._out.items()}


def _stats(values: Sequence[float] | np.ndarray[Any, Any]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(v.mean()), 3), "median": round(float(np.median(v)), 3),
            "p95": round(float(np.percentile(v, 95)), 3), "max": round(float(v.max()), 3)}


@dataclass(frozen=True)
class LandmarkOutputs:
    """Outputs of a landmark model over n crops.

    Attributes:
        landmarks: (n, 39, 5) float32: x, y, z crop px, visibility and presence logits.
        presence: (n,) float32 pose presence probability.
        world: (n, 39, 3) float32 metres.
    """

    landmarks: F32
    presence: F32
    world: F32


def run_landmarks(model: bytes, crops: np.ndarray[Any, Any],
                  names: Mapping[str, str]) -> LandmarkOutputs:
    """Runs a landmark model over (n, 1, 256, 256, 3) crops.

    Args:
        model: ``.tflite`` bytes.
        crops: Inputs, one batch-1 array per crop.
        names: Output tensor name for ``landmarks``, ``presence`` and ``world``.
    """
    run = Runner(model)
    lm, pr, wo = [], [], []
    for x in crops:
        o = run(x)
        lm.append(o[names["landmarks"]].reshape(39, 5))
        pr.append(float(o[names["presence"]].reshape(-1)[0]))
        wo.append(o[names["world"]].reshape(39, 3))
    return LandmarkOutputs(np.stack(lm).astype(np.float32), np.asarray(pr, np.float32),
                           np.stack(wo).astype(np.float32))


def landmark_fidelity(ref: LandmarkOutputs, test: LandmarkOutputs) -> dict[str, Any]:
    """Compares a shipped landmark model's outputs with the float original's.

    Landmark errors are taken over the crops where the float model sees a person (presence >
    0.5): on the others the pipeline drops the landmarks, and the world landmarks of an empty
    crop have no meaning.

    Args:
        ref: Float original's outputs.
        test: Shipped model's outputs on the same crops.

    Returns:
        ``crops``, ``crops_with_person``; ``px_2d`` (per crop: mean distance in crop px over the
        body landmarks with float visibility > 0.5) and ``world_mm`` (per crop: mean 3D
        distance over the 33 body landmarks, mm) as mean/median/p95/max;
        ``presence_agreement`` (fraction of all crops on the same side of 0.5),
        ``presence_disagreements`` (float presence of each crop that flips); ``passes``.
    """
    person = ref.presence > 0.5
    vis = ref.landmarks[:, :BODY, 3] > 0.0  # logit > 0  <=>  probability > 0.5
    d2 = np.linalg.norm(ref.landmarks[:, :BODY, :2] - test.landmarks[:, :BODY, :2], axis=2)
    px = np.array([d2[i, vis[i]].mean() for i in np.flatnonzero(person & vis.any(axis=1))])
    mm = 1000.0 * np.linalg.norm(ref.world[person, :BODY] - test.world[person, :BODY],
                                 axis=2).mean(1)
    flips = np.flatnonzero(person != (test.presence > 0.5))
    agree = 1.0 - flips.size / ref.presence.shape[0]
    px_s, mm_s = _stats(px), _stats(mm)
    return {
        "crops": int(ref.presence.shape[0]),
        "crops_with_person": int(person.sum()),
        "px_2d": px_s,
        "world_mm": mm_s,
        "presence_agreement": round(agree, 4),
        "presence_disagreements": [round(float(ref.presence[i]), 3) for i in flips],
        "passes": bool(px_s["mean"] <= LANDMARK_MAX_PX and mm_s["mean"] <= WORLD_MAX_MM
                       and flips.size == 0),
    }


def detector_fidelity(ref_model: bytes, test_model: bytes, inputs: np.ndarray[Any, Any],
                      letterboxes: Sequence[Letterbox], names: Mapping[str, str],
                      borderline: float = BORDERLINE_SCORE) -> dict[str, Any]:
    """Compares a shipped detector with the float original after decoding and NMS.

    A float detection is matched when exactly one shipped detection overlaps it with IoU >=
    0.85 (and no other float detection took that one); a frame is ``ok`` when every float
    detection is matched and no shipped detection is left over. Misses and extras are also
    counted apart when the detection that exists scores below ``borderline``: a detection
    within a few hundredths of the 0.5 score threshold appears or vanishes with any change of
    the model, however small.

    Args:
        ref_model: Float original ``.tflite`` bytes (outputs ``Identity``, ``Identity_1``).
        test_model: Shipped model bytes.
        inputs: (n, 1, 224, 224, 3) float32 letterboxed frames.
        letterboxes: The letterbox of each frame.
        names: Output tensor names in ``test_model`` for ``boxes`` and ``scores``.
        borderline: Score below which a missed or extra detection counts as borderline.

    Returns:
        ``frames``, ``detections`` (float), ``frames_ok``, ``missed``, ``extra``,
        ``frames_ok_but_borderline`` (frames whose only faults are borderline detections),
        ``borderline_scores`` (scores of those detections), ``iou`` of each float detection's
        best shipped match (mean/median/p5/min), ``passes`` (every frame ok).
    """
    cfg = DetectorConfig()
    anchors = ssd_anchors(cfg)
    ref, test = Runner(ref_model), Runner(test_model)
    ious: list[float] = []
    ok = ok_borderline = missed = extra = n_det = 0
    border_scores: list[float] = []
    for x, lb in zip(inputs, letterboxes, strict=True):
        r, t = ref(x), test(x)
        dr = decode(r["Identity"], r["Identity_1"], anchors, lb, cfg)
        dt = decode(t[names["boxes"]], t[names["scores"]], anchors, lb, cfg)
        n_det += len(dr)
        hard = soft = 0
        used: set[int] = set()
        for i in range(len(dr)):
            m = box_iou(dr.boxes[i][None], dt.boxes)[0] if len(dt) else np.zeros(0)
            hits = np.flatnonzero(m >= DETECTOR_MIN_IOU)
            if hits.size == 1 and int(hits[0]) not in used:
                used.add(int(hits[0]))
            else:
                missed += 1
                if float(dr.scores[i]) < borderline:
                    soft += 1
                    border_scores.append(round(float(dr.scores[i]), 3))
                else:
                    hard += 1
            if m.size:
                ious.append(float(m.max()))
        for j in range(len(dt)):
            if j not in used:
                extra += 1
                if float(dt.scores[j]) < borderline:
                    soft += 1
                    border_scores.append(round(float(dt.scores[j]), 3))
                else:
                    hard += 1
        ok += int(hard == 0 and soft == 0)
        ok_borderline += int(hard == 0 and soft > 0)
    v = np.asarray(ious if ious else [0.0], dtype=np.float64)
    return {
        "frames": len(letterboxes),
        "detections": n_det,
        "frames_ok": ok,
        "frames_ok_but_borderline": ok_borderline,
        "missed": missed,
        "extra": extra,
        "borderline_scores": border_scores,
        "iou": {"mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
                "p5": round(float(np.percentile(v, 5)), 4), "min": round(float(v.min()), 4)},
        "passes": bool(ok == len(letterboxes) and n_det > 0),
    }


def latency_ms(models: Mapping[str, bytes], threads: int, runs: int = 100, rounds: int = 5
               ) -> dict[str, float]:
    """Median invoke time of each model, interleaved so they share the machine's noise.

    Each model gets one warm-up run, then ``rounds`` rounds in which every model runs
    ``runs // rounds`` times in turn; the median over all runs is reported.

    Args:
        models: Name -> ``.tflite`` bytes.
        threads: Interpreter threads.
        runs: Timed runs per model.
        rounds: Interleaving rounds.

    Returns:
        Name -> median ms.
    """
    rng = np.random.default_rng(0)
    interps: dict[str, Any] = {}
    for name, b in models.items():
        it = create_interpreter(b, threads)
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], rng.random(d["shape"], dtype=np.float32))
        it.invoke()
        interps[name] = it
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, it in interps.items():
            for _ in range(runs // rounds):
                t0 = time.perf_counter()
                it.invoke()
                times[name].append(time.perf_counter() - t0)
    return {k: round(1000.0 * float(np.median(v)), 2) for k, v in times.items()}
