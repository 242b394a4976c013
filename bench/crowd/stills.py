"""Image mode on the crowd stills in one process: figures, detector calls and ms per still.

``edge-pose run --source DIR/frames`` with ``[models] threads = 1`` does the same work (an image
takes up to ``tracking.max_persons_image`` people, 32); this runs the pipeline's detector and
core directly, so a range of frames can be scored quickly while the still path is developed,
and it counts the model calls that make a still's cost::

    python -m bench.crowd.stills --gt cache/crowd/gt.json --frames 0:100 \
        [--look gray|dark|noise|jpeg20|rot90] [--pred preds.json] [--json figures.json]

Prints the scorer's figures (``bench.crowd.score.score_frames``) on the chosen frames, the
NanoDet and landmark calls per 1280x720 and per 768x576 still, and the median ms per still of
each size (detector + core, one thread). Timing is wall time on whatever else the host runs.
``--look`` renders every still as another camera would deliver it (``bench.crowd.looks``: gray,
dark, noisy, JPEG q20, turned 90 deg with the ground truth turned too) before it is run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.crowd import looks
from bench.crowd.score import Person, _pred_person, load_gt, score_frames
from edge.config import parse_config
from edge.detect.box import BoxPersonDetector
from edge.pipeline import build_pipeline
from edge.sinks.images import coco_person
from edge.types import DetectorResult, Frame


def _frames(spec: str, n: int) -> range:
    a, _, b = spec.partition(":")
    return range(int(a or 0), min(n, int(b)) if b else n)


def run(gt_path: Path, frames: range, max_persons: int = 32, models_dir: Path | None = None,
        look: looks.Look = "plain") -> dict[str, Any]:
    """Runs image mode on ``frames`` of the benchmark and scores them.

    Args:
        gt_path: The benchmark's ``gt.json`` (frames next to it).
        frames: Indices of the still frames to run.
        max_persons: ``tracking.max_persons_image``.
        models_dir: ``models.dir`` (None: the shipped models).
        look: How each still is rendered first (:func:`bench.crowd.looks.apply`, seeded with
            the frame's index); the ground truth follows it (:func:`bench.crowd.looks.person`).

    Returns:
        ``{"figures": score_frames(...), "cost": {...}, "predictions": [...]}``; predictions
        are COCO results (``coco_person``) with ``frame`` = the frame's index.
    """
    gt = load_gt(gt_path)
    models: dict[str, Any] = {"threads": 1}
    if models_dir is not None:
        models["dir"] = str(models_dir)
    config = parse_config({"tracking": {"max_persons_image": max_persons}, "models": models})
    pipe = build_pipeline(config, timings=False, mode="image")
    counts = {"det": 0, "lm": 0}
    box = getattr(pipe.detector, "detector", pipe.detector)
    if not isinstance(box, BoxPersonDetector):
        raise SystemExit("bench.crowd.stills counts the box detector's calls: run it with "
                         "detector.kind = box or both")
    model = box.model
    run_model: Callable[..., Any] = model.run

    def counted_run(*args: Any, **kwargs: Any) -> Any:
        counts["det"] += 1
        return run_model(*args, **kwargs)

    model.run = counted_run  # type: ignore[method-assign]
    lm = pipe.core.landmarker
    lm_call = lm.__call__

    def counted_lm(image: Any, regions: Any) -> Any:
        counts["lm"] += len(regions)
        return lm_call(image, regions)

    pipe.core.landmarker = counted_lm  # type: ignore[assignment]
    root = gt_path.parent
    preds: list[list[Person]] = []
    gts = []
    out: list[dict[str, Any]] = []
    cost: dict[str, dict[str, list[float]]] = {}
    for i in frames:
        file, w, h, persons = gt.frames[i]
        image = cv2.imread(str(root / file), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{root / file}: cannot be read")
        image = looks.apply(np.asarray(image, np.uint8), look, i)
        persons = [looks.person(p, w, h, look) for p in persons]
        w, h = looks.size(w, h, look)
        frame = Frame(np.ascontiguousarray(image), i, 1, 0.0, file)
        before = dict(counts)
        t0 = time.perf_counter()
        detected = pipe.detect(frame)
        pipe.core.reset()
        step = pipe.core.step(frame, DetectorResult(detected.detections, i, 0.0, detected.ms))
        ms = (time.perf_counter() - t0) * 1e3
        size = f"{w}x{h}"
        c = cost.setdefault(size, {"det": [], "lm": [], "ms": []})
        c["det"].append(counts["det"] - before["det"])
        c["lm"].append(counts["lm"] - before["lm"])
        c["ms"].append(ms)
        payload = step.annotation.payload
        mine = []
        for p in payload["persons"]:
            ann = coco_person(payload, p, i, len(out) + 1)
            ann["frame"] = i
            out.append(ann)
            kp = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
            mine.append(_pred_person(kp, w, h, ann["bbox"], ann["score"], None))
        preds.append(mine)
        gts.append(persons)
    figures = score_frames(gts, preds)
    summary = {size: {"frames": len(c["ms"]), "detector_calls": statistics.mean(c["det"]),
                      "landmark_calls": statistics.mean(c["lm"]),
                      "ms_median": statistics.median(c["ms"])} for size, c in cost.items()}
    return {"figures": figures, "cost": summary, "predictions": out}


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gt", type=Path, required=True, help="the benchmark's gt.json")
    ap.add_argument("--frames", default="0:", help="start:stop of the still frames (0:)")
    ap.add_argument("--max-persons", type=int, default=32,
                    help="tracking.max_persons_image (default 32, as edge-pose run)")
    ap.add_argument("--look", choices=looks.LOOKS, default="plain",
                    help="render each still as another camera would (bench.crowd.looks)")
    ap.add_argument("--pred", type=Path, help="write the predictions (COCO results) here")
    ap.add_argument("--json", type=Path, help="write figures and cost here")
    a = ap.parse_args(argv)
    gt = load_gt(a.gt)
    res = run(a.gt, _frames(a.frames, len(gt.frames)), a.max_persons, look=a.look)
    f = res["figures"]
    rec = {k: v["recall"] for k, v in f["recall"].items()}
    print(json.dumps({"recall": rec, "precision": f["precision"],
                      "keypoint_error": {k: v.get("median_pct") for k, v in
                                         f["keypoint_error"].items()},
                      "cost": res["cost"]}, indent=1))
    if a.pred:
        a.pred.write_text(json.dumps(res["predictions"]))
    if a.json:
        a.json.write_text(json.dumps({"figures": f, "cost": res["cost"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
