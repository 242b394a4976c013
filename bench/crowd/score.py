"""Scores edge-pose's outputs against the crowd benchmark's ``gt.json``.

Usage::

    python -m bench.crowd.score --gt cache/crowd/gt.json --pred out/frames/coco_keypoints.json
        [--clip clip00=out/clip00/annotations.jsonl ...] [--clips-dir out/clips]
        [--json score.json] [--markdown score.md]

Still frames are read from a COCO keypoints results file (``images`` index + ``annotations``),
clips from edge-pose's ``annotations.jsonl`` (one JSON object per frame). See README.md here for
the matching rule and every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from edge.skeleton import COCO17_NAMES

F64 = npt.NDArray[np.float64]

#: Height buckets (px, lower bound inclusive, upper exclusive) of the recall table.
BUCKETS: dict[str, tuple[float, float]] = {
    "40-80": (40.0, 80.0), "80-160": (80.0, 160.0), "160-400": (160.0, math.inf),
    ">=80": (80.0, math.inf), "all": (0.0, math.inf)}
#: A prediction and a person match when their matching boxes overlap this much (IoU).
IOU_MATCH = 0.5
#: Keypoint errors are reported for matched people at least this tall, px.
KEYPOINT_MIN_HEIGHT = 80.0


class ScoreError(ValueError):
    """A ground-truth or prediction file cannot be read; the message names it and the fix."""


@dataclass(frozen=True, eq=False)
class Person:
    """One person of the ground truth or of the predictions, in frame px.

    Attributes:
        keypoints: (17, 3) ``x, y, v``; v > 0 where the joint is given.
        box: (4,) ``x1, y1, x2, y2`` the matching box (:func:`match_box`).
        height: Full-body height (ground truth), px; NaN for predictions. For someone lying,
            the body's length (``gt.json``'s ``height`` is that for them).
        ignore: Too little seen to score (ground truth only).
        identity: Person / track id (None when the file has none).
        score: Prediction score (1 for the ground truth).
        lying: Turned to lie on the floor (ground truth only; ``gt.json``'s ``lying``).
    """

    keypoints: F64
    box: F64
    height: float = math.nan
    ignore: bool = False
    identity: int | None = None
    score: float = 1.0
    lying: bool = False


def match_box(points: F64, width: int, height: int, fallback: Sequence[float] | None = None
              ) -> F64:
    """The box people are matched on: their keypoints' box, made at least half as wide as tall.

    The box of the given keypoints (clipped to the frame) is widened about its centre to at least
    half its height (and heightened to half its width for a person lying down). A standing
    person's keypoint box is often under a quarter as wide as tall, so a 2-3 px horizontal error
    on a 40 px person would drop a plain IoU below 0.5; widened, the IoU tests where the person
    is and how big, while limb accuracy is the keypoint error's job.

    Args:
        points: (k, 2) px of the given keypoints.
        width: Frame width, px.
        height: Frame height, px.
        fallback: ``x, y, w, h`` px used when fewer than 2 keypoints are given.

    Returns:
        (4,) float64 ``x1, y1, x2, y2``.
    """
    if len(points) >= 2:
        p = np.clip(points, 0.0, [width - 1.0, height - 1.0])
        x1, y1 = p.min(axis=0)
        x2, y2 = p.max(axis=0)
    elif fallback is not None:
        x, y, w, h = (float(v) for v in fallback)
        x1, y1, x2, y2 = x, y, x + w, y + h
    else:
        return np.zeros(4)
    w, h = x2 - x1, y2 - y1
    if w < 0.5 * h:
        cx = 0.5 * (x1 + x2)
        x1, x2 = cx - 0.25 * h, cx + 0.25 * h
    elif h < 0.5 * w:
        cy = 0.5 * (y1 + y2)
        y1, y2 = cy - 0.25 * w, cy + 0.25 * w
    return np.array([x1, y1, x2, y2], np.float64)


def iou_matrix(a: F64, b: F64) -> F64:
    """(n, m) IoU of ``x1, y1, x2, y2`` boxes (n, 4) and (m, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0],
                                                                       b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1],
                                                                       b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _hungarian(iou: F64) -> list[tuple[int, int]]:
    """Pairs (row, col) maximising total IoU among pairs with IoU >= ``IOU_MATCH``."""
    if iou.size == 0:
        return []
    ok = iou >= IOU_MATCH
    # scipy's solver (the Hungarian method) on -IoU; pairs below the bar cost 1 (never chosen
    # over not matching, since they are dropped after).
    rows, cols = linear_sum_assignment(np.where(ok, -iou, 1.0))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if ok[r, c]]


@dataclass
class FrameMatch:
    """Result of matching one frame.

    Attributes:
        pairs: (gt index, pred index) of scored people (not ignored).
        false_positives: Indices of predictions matching nobody.
        discarded: Indices of predictions on ignored people (neither right nor wrong).
    """

    pairs: list[tuple[int, int]] = field(default_factory=list)
    false_positives: list[int] = field(default_factory=list)
    discarded: list[int] = field(default_factory=list)


def match_frame(gt: Sequence[Person], pred: Sequence[Person]) -> FrameMatch:
    """Matches predictions to people: scored people first, then ignored ones.

    Args:
        gt: The frame's people.
        pred: The frame's predictions.

    Returns:
        Pairs with scored people; predictions matching an ignored person (IoU >= 0.5, or half
        their box inside its box) are discarded, the rest are false positives.
    """
    scored = [i for i, p in enumerate(gt) if not p.ignore]
    ignored = [i for i, p in enumerate(gt) if p.ignore]
    pb = np.array([p.box for p in pred]).reshape(-1, 4)
    out = FrameMatch()
    iou = iou_matrix(np.array([gt[i].box for i in scored]).reshape(-1, 4), pb)
    used: set[int] = set()
    for r, c in _hungarian(iou):
        out.pairs.append((scored[r], c))
        used.add(c)
    rest = [j for j in range(len(pred)) if j not in used]
    if ignored and rest:
        ib = np.array([gt[i].box for i in ignored])
        iou2 = iou_matrix(ib, pb[rest])
        hit = {rest[c] for _, c in _hungarian(iou2)}
        # Also a prediction mostly inside an ignored person's box: half of its area or more.
        for j in rest:
            b = pb[j]
            area = max((b[2] - b[0]) * (b[3] - b[1]), 1e-12)
            iw = np.clip(np.minimum(ib[:, 2], b[2]) - np.maximum(ib[:, 0], b[0]), 0, None)
            ih = np.clip(np.minimum(ib[:, 3], b[3]) - np.maximum(ib[:, 1], b[1]), 0, None)
            if (iw * ih / area >= 0.5).any():
                hit.add(j)
        out.discarded = sorted(hit)
        rest = [j for j in rest if j not in hit]
    out.false_positives = rest
    return out


# --- reading -------------------------------------------------------------------------------


def _gt_person(d: dict[str, Any], width: int, height: int) -> Person:
    kp = np.asarray(d["keypoints"], np.float64).reshape(17, 3)
    given = kp[kp[:, 2] > 0, :2]
    return Person(kp, match_box(given, width, height, d["bbox"]), float(d["height"]),
                  bool(d["ignore"]), int(d["id"]), lying=bool(d.get("lying", False)))


@dataclass(frozen=True)
class GroundTruth:
    """``gt.json`` read into people.

    Attributes:
        frames: Still frames: (file, width, height, people).
        clips: Clip name -> (width, height, people per frame).
    """

    frames: list[tuple[str, int, int, list[Person]]]
    clips: dict[str, tuple[int, int, list[list[Person]]]]


def load_gt(path: Path) -> GroundTruth:
    """Reads ``gt.json`` (see README.md).

    Raises:
        ScoreError: When the file is missing or not a crowd benchmark ground truth.
    """
    try:
        d = json.loads(path.read_text())
        frames = [(f["file"], int(f["width"]), int(f["height"]),
                   [_gt_person(p, int(f["width"]), int(f["height"])) for p in f["persons"]])
                  for f in d["frames"]]
        clips = {c["name"]: (int(c["width"]), int(c["height"]),
                             [[_gt_person(p, int(c["width"]), int(c["height"]))
                               for p in fr["persons"]] for fr in c["frames"]])
                 for c in d["clips"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ScoreError(f"ground truth {path}: cannot read it ({type(e).__name__}: {e}); "
                         "make it with `python -m bench.crowd.generate`") from None
    return GroundTruth(frames, clips)


def _pred_person(kp: F64, width: int, height: int, bbox: Sequence[float] | None,
                 score: float, identity: int | None) -> Person:
    return Person(kp, match_box(kp[kp[:, 2] > 0, :2], width, height, bbox),
                  identity=identity, score=score)


def load_coco_results(path: Path, gt: GroundTruth, min_score: float = 0.0
                      ) -> list[list[Person]]:
    """Reads a COCO keypoints results file into predictions per still frame of ``gt``.

    The file's ``images`` (id, file_name, width, height) are matched to the frames by file name
    (the path as in ``gt.json``, else the base name). Keypoints are ``[x, y, v] x 17`` px; v > 0
    means given.

    Raises:
        ScoreError: When the file cannot be read or names no frame of the benchmark.
    """
    try:
        d = json.loads(path.read_text())
        images = {int(im["id"]): str(im["file_name"]) for im in d["images"]}
        anns = d["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ScoreError(f"predictions {path}: not a COCO keypoints results file with "
                         f"`images` and `annotations` ({type(e).__name__}: {e})") from None
    by_path = {f[0]: i for i, f in enumerate(gt.frames)}
    by_name = {Path(f[0]).name: i for i, f in enumerate(gt.frames)}
    to_frame: dict[int, int] = {}
    for image_id, name in images.items():
        i = by_path.get(name, by_name.get(Path(name).name))
        if i is not None:
            to_frame[image_id] = i
    if gt.frames and not to_frame:
        raise ScoreError(f"predictions {path}: none of its {len(images)} images is a frame of "
                         "the benchmark (file names like frames/000000.jpg expected)")
    out: list[list[Person]] = [[] for _ in gt.frames]
    for a in anns:
        i = to_frame.get(int(a["image_id"]))
        if i is None or int(a.get("category_id", 1)) != 1:
            continue
        score = float(a.get("score", 1.0))
        if score < min_score:
            continue
        _, w, h, _ = gt.frames[i]
        kp = np.asarray(a["keypoints"], np.float64).reshape(17, 3)
        out[i].append(_pred_person(kp, w, h, a.get("bbox"), score, None))
    return out


def load_annotations_jsonl(path: Path, width: int, height: int, n_frames: int,
                           min_score: float = 0.0) -> list[list[Person]]:
    """Reads edge-pose's ``annotations.jsonl`` of one clip into predictions per frame.

    Joints are looked up by their COCO-17 names (present in both ``blazepose33`` and ``coco17``
    annotations); ``null`` joints are not given. Frames without a line have no predictions.

    Raises:
        ScoreError: When the file cannot be read.
    """
    out: list[list[Person]] = [[] for _ in range(n_frames)]
    scale = np.array([width, height], np.float64)
    try:
        lines = path.read_text().splitlines()
        for line in lines:
            if not line.strip():
                continue
            d = json.loads(line)
            f = int(d["frame_id"])
            if not 0 <= f < n_frames:
                continue
            for p in d["persons"]:
                score = float(p.get("score", 1.0))
                if score < min_score:
                    continue
                kp = np.zeros((17, 3))
                for j, name in enumerate(COCO17_NAMES):
                    q = p["pose_2d"].get(name)
                    if q is not None:
                        kp[j] = (q["x"] * scale[0], q["y"] * scale[1], 2.0)
                b = p.get("bbox")
                bbox = (None if b is None else
                        [b["x1"] * width, b["y1"] * height, (b["x2"] - b["x1"]) * width,
                         (b["y2"] - b["y1"]) * height])
                ident = p.get("id")
                out[f].append(_pred_person(kp, width, height, bbox, score,
                                           None if ident is None else int(ident)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ScoreError(f"predictions {path}: not edge-pose annotations JSONL "
                         f"({type(e).__name__}: {e})") from None
    return out


def annotated_frames(path: Path) -> set[int]:
    """The ``frame_id`` of every line of an ``annotations.jsonl`` (the frames a run processed).

    Raises:
        ScoreError: When the file cannot be read.
    """
    try:
        return {int(json.loads(line)["frame_id"]) for line in path.read_text().splitlines()
                if line.strip()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ScoreError(f"predictions {path}: not edge-pose annotations JSONL "
                         f"({type(e).__name__}: {e})") from None


# --- scoring -------------------------------------------------------------------------------


def _bucket_counts(gt: Iterable[Person], found: Iterable[bool]) -> dict[str, dict[str, Any]]:
    tot = dict.fromkeys(BUCKETS, 0)
    hit = dict.fromkeys(BUCKETS, 0)
    for p, f in zip(gt, found, strict=True):
        for name, (lo, hi) in BUCKETS.items():
            if lo <= p.height < hi:
                tot[name] += 1
                hit[name] += int(f)
    return {k: {"found": hit[k], "total": tot[k],
                "recall": round(hit[k] / tot[k], 4) if tot[k] else None} for k in BUCKETS}


def keypoint_errors(gt: Person, pred: Person) -> F64:
    """Errors of the joints seen in the ground truth (v = 2) and given in the prediction.

    Returns:
        (k,) float64, distance / full-body height (a fraction, not %).
    """
    ok = (gt.keypoints[:, 2] == 2) & (pred.keypoints[:, 2] > 0)
    d = np.linalg.norm(gt.keypoints[ok, :2] - pred.keypoints[ok, :2], axis=1)
    return np.asarray(d / gt.height, np.float64)


def _error_stats(errs: list[float], missing: int) -> dict[str, Any]:
    e = np.asarray(errs, np.float64) * 100.0
    return {
        "median_pct": round(float(np.median(e)), 3) if len(e) else None,
        "mean_pct": round(float(e.mean()), 3) if len(e) else None,
        "p90_pct": round(float(np.percentile(e, 90)), 3) if len(e) else None,
        "joints": len(e),
        "seen_joints_not_given": missing,
    }


def score_frames(gt_frames: Sequence[list[Person]], pred_frames: Sequence[list[Person]]
                 ) -> dict[str, Any]:
    """Recall by height, precision and keypoint error over frames scored independently.

    When some people lie (``Person.lying``), ``recall_lying`` and ``recall_upright`` give the
    recall by height (body length for those lying) of each apart.
    """
    people: list[Person] = []
    found: list[bool] = []
    tp = fp = discarded = n_pred = ignored = 0
    errs: dict[str, list[float]] = {"40-80": [], ">=80": []}
    missing = {"40-80": 0, ">=80": 0}
    for gts, preds in zip(gt_frames, pred_frames, strict=True):
        m = match_frame(gts, preds)
        matched = {g: p for g, p in m.pairs}
        for i, g in enumerate(gts):
            if g.ignore:
                ignored += 1
                continue
            people.append(g)
            found.append(i in matched)
            if i in matched:
                key = ">=80" if g.height >= KEYPOINT_MIN_HEIGHT else "40-80"
                pr = preds[matched[i]]
                errs[key] += keypoint_errors(g, pr).tolist()
                missing[key] += int(((g.keypoints[:, 2] == 2) & (pr.keypoints[:, 2] <= 0)).sum())
        tp += len(m.pairs)
        fp += len(m.false_positives)
        discarded += len(m.discarded)
        n_pred += len(preds)
    posture: dict[str, Any] = {}
    if any(p.lying for p in people):
        for name, want in (("recall_upright", False), ("recall_lying", True)):
            sel = [i for i, p in enumerate(people) if p.lying == want]
            posture[name] = _bucket_counts([people[i] for i in sel], [found[i] for i in sel])
    return {
        "frames": len(gt_frames),
        "people": len(people),
        "ignored_people": ignored,
        "predictions": n_pred,
        "recall": _bucket_counts(people, found),
        **posture,
        "precision": {"true_positives": tp, "false_positives": fp,
                      "on_ignored_people": discarded,
                      "precision": round(tp / (tp + fp), 4) if tp + fp else None},
        "keypoint_error": {k: _error_stats(v, missing[k]) for k, v in errs.items()},
    }


def score_clip(gt_frames: Sequence[list[Person]], pred_frames: Sequence[list[Person]]
               ) -> dict[str, Any]:
    """Detection figures plus IDF1, ID switches and MOTA (py-motmetrics) of one clip.

    Per frame, predictions on ignored people are removed first (:func:`match_frame`); the rest
    and the scored people go to motmetrics with distance 1 - IoU of the matching boxes, pairs
    below IoU 0.5 not allowed. motmetrics does the CLEAR-MOT matching over time (keeping last
    frame's pairs when still valid) and the global ID assignment of IDF1.
    """
    import motmetrics as mm  # imported here: only clip scoring needs it (and pandas)

    acc = mm.MOTAccumulator(auto_id=False)
    for f, (gts, preds) in enumerate(zip(gt_frames, pred_frames, strict=True)):
        m = match_frame(gts, preds)
        keep_p = [j for j in range(len(preds)) if j not in set(m.discarded)]
        keep_g = [i for i, g in enumerate(gts) if not g.ignore]
        iou = iou_matrix(np.array([gts[i].box for i in keep_g]).reshape(-1, 4),
                         np.array([preds[j].box for j in keep_p]).reshape(-1, 4))
        dist = np.where(iou >= IOU_MATCH, 1.0 - iou, np.nan)
        acc.update([gts[i].identity for i in keep_g],
                   [preds[j].identity if preds[j].identity is not None else 10_000 + j
                    for j in keep_p], dist, frameid=f)
    names = ["idf1", "idp", "idr", "mota", "num_switches", "num_false_positives", "num_misses",
             "num_objects", "num_unique_objects", "mostly_tracked", "recall", "precision"]
    s = mm.metrics.create().compute(acc, metrics=names, name="clip")
    mot: dict[str, float | int | None] = {}
    for k in names:
        v = s[k].iloc[0]
        if isinstance(v, float):
            # motmetrics gives NaN for ratios over nothing (precision with no prediction):
            # null in the JSON, which allows no NaN.
            mot[k] = None if math.isnan(v) else round(v, 4)
        else:
            mot[k] = int(v)
    return {"mot": mot, "detection": score_frames(gt_frames, pred_frames)}


def score(gt: GroundTruth, stills: list[list[Person]] | None,
          clips: dict[str, list[list[Person]]],
          processed: dict[str, set[int]] | None = None) -> dict[str, Any]:
    """Every figure as a JSON-ready dict.

    Args:
        gt: The ground truth.
        stills: Predictions per still frame, or None.
        clips: Predictions per frame of each clip scored.
        processed: Per clip, the only frames to score (a realtime run's processed frames: the
            frames it skipped have no line, and are then neither misses nor anything else);
            None scores every frame.
    """
    out: dict[str, Any] = {
        "matching": f"Hungarian on IoU >= {IOU_MATCH} of keypoint boxes widened to at least "
                    "half as wide as tall; ignored people matched last and neither counted",
    }
    if stills is not None:
        out["stills"] = score_frames([f[3] for f in gt.frames], stills)
    out["clips"] = {}
    for name, preds in sorted(clips.items()):
        if name not in gt.clips:
            raise ScoreError(f"clip {name!r} is not in the ground truth (it has "
                             f"{sorted(gt.clips)})")
        frames = gt.clips[name][2]
        keep = (sorted(processed[name]) if processed is not None and name in processed
                else range(len(frames)))
        out["clips"][name] = score_clip([frames[f] for f in keep], [preds[f] for f in keep])
    return out


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v}"


def markdown(result: dict[str, Any]) -> str:
    """A short Markdown report of :func:`score`'s result."""
    lines: list[str] = []
    st = result.get("stills")
    if st is not None:
        r = st["recall"]
        lines += [f"**Still frames**: {st['frames']} frames, {st['people']} people scored "
                  f"({st['ignored_people']} ignored), {st['predictions']} predictions.", "",
                  "| | 40-80 px | 80-160 px | 160-400 px | >= 80 px | all |",
                  "|---|---|---|---|---|---|",
                  "| recall | " + " | ".join(
                      f"{_fmt(r[k]['recall'], True)} ({r[k]['found']}/{r[k]['total']})"
                      for k in ("40-80", "80-160", "160-400", ">=80", "all")) + " |", "",
                  f"Precision {_fmt(st['precision']['precision'], True)} "
                  f"({st['precision']['false_positives']} false positives). "
                  "Keypoint error, median over seen COCO-17 joints, % of height: "
                  f">= 80 px {_fmt(st['keypoint_error']['>=80']['median_pct'])} "
                  f"({st['keypoint_error']['>=80']['joints']} joints), "
                  f"40-80 px {_fmt(st['keypoint_error']['40-80']['median_pct'])}.", ""]
    if result["clips"]:
        lines += ["| clip | IDF1 | ID switches | MOTA | recall >= 80 px | recall 40-80 px |"
                  " precision | kp error >= 80 px (%) |", "|---|---|---|---|---|---|---|---|"]
        for name, c in result["clips"].items():
            d, m = c["detection"], c["mot"]
            lines.append(
                f"| {name} | {_fmt(m['idf1'], True)} | {m['num_switches']} | "
                f"{_fmt(m['mota'], True)} | {_fmt(d['recall']['>=80']['recall'], True)} | "
                f"{_fmt(d['recall']['40-80']['recall'], True)} | "
                f"{_fmt(d['precision']['precision'], True)} | "
                f"{_fmt(d['keypoint_error']['>=80']['median_pct'])} |")
        lines.append("")
        lying = {n: c["detection"] for n, c in result["clips"].items()
                 if "recall_lying" in c["detection"]}
        if lying:
            lines += ["| clip | upright: recall 40-80 / >= 80 px | lying (by body length) |",
                      "|---|---|---|"]
            for name, d in lying.items():
                u, y = d["recall_upright"], d["recall_lying"]
                lines.append(" | ".join(
                    [f"| {name}"] + [" / ".join(f"{_fmt(r[k]['recall'], True)} "
                                                f"({r[k]['found']}/{r[k]['total']})"
                                                for k in ("40-80", ">=80")) for r in (u, y)])
                    + " |")
            lines.append("")
    lines.append(f"Matching: {result['matching']}.")
    return "\n".join(lines) + "\n"


# --- the ground truth as predictions (to check a pipeline's writer, and in tests) ----------


def gt_as_coco_results(gt_json: dict[str, Any]) -> dict[str, Any]:
    """The still frames' ground truth written as a COCO keypoints results file.

    Joints outside the frame get v = 0, all others v = 2: what a perfect predictor gives.
    """
    images, anns = [], []
    for f in gt_json["frames"]:
        images.append({"id": f["id"], "file_name": f["file"], "width": f["width"],
                       "height": f["height"]})
        for p in f["persons"]:
            kp = np.asarray(p["keypoints"], np.float64).reshape(17, 3)
            kp[:, 2] = np.where(kp[:, 2] > 0, 2, 0)
            anns.append({"image_id": f["id"], "category_id": 1,
                         "keypoints": [float(v) for v in kp.reshape(-1)],
                         "bbox": [float(v) for v in p["bbox"]], "score": 1.0})
    return {"images": images, "annotations": anns}


def gt_as_annotations(clip: dict[str, Any]) -> list[dict[str, Any]]:
    """One clip's ground truth as edge-pose annotation lines (coco17 joints, ids kept)."""
    w, h = clip["width"], clip["height"]
    lines = []
    for fr in clip["frames"]:
        persons = []
        for p in fr["persons"]:
            kp = np.asarray(p["keypoints"], np.float64).reshape(17, 3)
            x, y, bw, bh = p["bbox"]
            persons.append({
                "id": p["id"], "score": 1.0,
                "bbox": {"x1": x / w, "y1": y / h, "x2": (x + bw) / w, "y2": (y + bh) / h},
                "pose_2d": {n: ({"x": kp[j, 0] / w, "y": kp[j, 1] / h} if kp[j, 2] > 0 else None)
                            for j, n in enumerate(COCO17_NAMES)}})
        lines.append({"v": 1, "frame_id": fr["index"], "image": {"width": w, "height": h},
                      "joints": "coco17", "persons": persons})
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 on bad input)."""
    ap = argparse.ArgumentParser(prog="python -m bench.crowd.score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", type=Path, required=True, help="gt.json of the benchmark")
    ap.add_argument("--pred", type=Path, help="coco_keypoints.json for the still frames")
    ap.add_argument("--clip", action="append", default=[], metavar="NAME=JSONL",
                    help="annotations.jsonl of one clip (repeatable)")
    ap.add_argument("--clips-dir", type=Path,
                    help="folder with NAME/annotations.jsonl for each clip NAME it holds")
    ap.add_argument("--min-score", type=float, default=0.0,
                    help="drop predictions scoring below this (default 0)")
    ap.add_argument("--processed-only", action="store_true",
                    help="clips: score only the frames with an annotation line (a realtime "
                         "run's processed frames), not its skipped frames as misses")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--markdown", type=Path, help="write the Markdown table here")
    args = ap.parse_args(argv)
    try:
        gt = load_gt(args.gt)
        stills = (load_coco_results(args.pred, gt, args.min_score)
                  if args.pred is not None else None)
        clip_files: dict[str, Path] = {}
        if args.clips_dir is not None:
            for name in gt.clips:
                p = args.clips_dir / name / "annotations.jsonl"
                if p.is_file():
                    clip_files[name] = p
            if not clip_files:
                raise ScoreError(f"--clips-dir {args.clips_dir}: no NAME/annotations.jsonl for "
                                 f"any clip of the benchmark ({sorted(gt.clips)})")
        for item in args.clip:
            name, sep, file = item.partition("=")
            if not sep:
                raise ScoreError(f"--clip {item!r}: write it as NAME=path/annotations.jsonl")
            clip_files[name] = Path(file)
        clips = {}
        processed: dict[str, set[int]] | None = {} if args.processed_only else None
        for name, path in clip_files.items():
            if name not in gt.clips:
                raise ScoreError(f"--clip {name}: no such clip in {args.gt} "
                                 f"(it has {sorted(gt.clips)})")
            w, h, frames = gt.clips[name]
            clips[name] = load_annotations_jsonl(path, w, h, len(frames), args.min_score)
            if processed is not None:
                processed[name] = annotated_frames(path)
        if stills is None and not clips:
            raise ScoreError("nothing to score: give --pred and/or --clip / --clips-dir")
        result = score(gt, stills, clips, processed)
    except ScoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = markdown(result)
    try:
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        if args.markdown is not None:
            args.markdown.write_text(text)
    except OSError as e:
        print(f"error: cannot write the report: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
