"""Side-by-side check of person detectors on real people at many sizes (a quick crowd check).

Run as ``python -m models.person_bench [--cache cache] [--json out/person_bench.json]`` after
``make person-models``. Until the crowd benchmark exists, people come from the pinned clips:

* **Ground truth**: Sports2D (frames 61-198, where both people are in view) and the four
  Pose2Sim views, every 8th frame. Each frame runs BlazePose's float detector and the float
  full landmark model; frames where the detector does not find exactly the people known to be
  there are skipped. The box of a person is the extent of its 33 landmarks, raised by 10 % of
  that height at the top (the landmarks stop at the eyes and ears) and widened by 5 % per side.
* **Canvases** of 1280x720 and 768x576: copies of one frame, scaled so that its tallest person
  is a target height (50-600 px), tiled on a grey canvas; every pasted person is recorded.
  So every person is real, and sizes go far below what the clips show.
* **Detectors**: the box detector (int8 shipped, float from the cache) and BlazePose's detector
  (float and int8) on the whole frame. A person counts as found when a detection matches it
  one to one (Hungarian) with box IoU >= 0.5; for BlazePose, whose box is the face, when its
  body region's centre lies in the person's box and its side is 0.6-3x the person's height.
  Precision: matched detections / all detections.
* **Landmark region scale**: on the original frames, the landmark model's error when its region
  comes from the box detector's box at several ``roi_scale`` values, against the region from
  BlazePose's keypoints; the reference is the landmarks of the tracking-refined region.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.detect import PoseDetector
from edge.detect.box import BoxDetectorConfig, BoxPersonDetector, box_regions, preprocess_box
from edge.geometry import box_iou
from edge.pose2d import PoseLandmarker
from edge.runtime import create_interpreter, load_manifest, load_model
from edge.types import F32, U8, Detections
from models import data, evaluate, sources

logger = logging.getLogger("models.person_bench")

ROOT = Path(__file__).resolve().parent.parent
BINS = ((40, 80), (80, 160), (160, 400), (400, 10_000))
HEIGHTS = (50, 70, 100, 140, 200, 300, 450, 600)
CANVASES = ((1280, 720), (768, 576))


@dataclass
class Sample:
    """One source frame with its people.

    Attributes:
        image: (H, W, 3) uint8 BGR.
        boxes: (n, 4) float32 person boxes px.
        label: ``clip:frame``.
    """

    image: U8
    boxes: F32
    label: str


def person_boxes(keypoints: F32) -> F32:
    """Person boxes (n, 4) from BlazePose landmarks (n, 33, 2) px (see the module doc)."""
    lo, hi = keypoints.min(axis=1), keypoints.max(axis=1)
    h = hi[:, 1] - lo[:, 1]
    w = hi[:, 0] - lo[:, 0]
    return np.stack([lo[:, 0] - 0.05 * w, lo[:, 1] - 0.10 * h, hi[:, 0] + 0.05 * w,
                     hi[:, 1] + 0.02 * h], axis=1).astype(np.float32)


def samples(src: Path, detector: PoseDetector, landmarker: PoseLandmarker) -> list[Sample]:
    """Source frames whose people the float BlazePose pipeline finds completely."""
    wanted = [("sports2d", sources.SPORTS2D_DEMO, range(61, 199, 8), 2)]
    wanted += [(f"pose2sim_cam0{k + 1}", m, range(0, 100, 8), 1)
               for k, m in enumerate(sources.POSE2SIM_CAMS)]
    out: list[Sample] = []
    for name, member, idx, count in wanted:
        for i, img in zip(idx, data.read_frames(src / member.path, list(idx)), strict=True):
            det = detector(img)
            if len(det) != count:
                continue
            poses = landmarker(img, det.regions)
            if not bool(np.all(poses.presence > 0.5)):
                continue
            out.append(Sample(img, person_boxes(poses.keypoints), f"{name}:{i}"))
    return out


def canvas(sample: Sample, size: tuple[int, int], height: int) -> tuple[U8, F32, int] | None:
    """Tiles of one sample scaled so its tallest person is ``height`` px, on a grey canvas.

    Returns:
        ``(image, boxes, n_required)`` or None when no whole person fits: the first
        ``n_required`` boxes are whole people; the rest are people cut by a tile edge.
    """
    w, h = size
    tallest = float((sample.boxes[:, 3] - sample.boxes[:, 1]).max())
    s = height / tallest
    ih, iw = sample.image.shape[:2]
    tw, th = round(iw * s), round(ih * s)
    tile_w, tile_h = min(tw, w), min(th, h)
    out = np.full((h, w, 3), 114, np.uint8)
    scaled = cv2.resize(sample.image, (tw, th), interpolation=cv2.INTER_AREA)
    # If the scaled frame is larger than the canvas, keep the window around its people.
    cx = float((sample.boxes[:, 0].min() + sample.boxes[:, 2].max()) / 2 * s)
    cy = float((sample.boxes[:, 1].min() + sample.boxes[:, 3].max()) / 2 * s)
    ox = int(np.clip(cx - tile_w / 2, 0, tw - tile_w))
    oy = int(np.clip(cy - tile_h / 2, 0, th - tile_h))
    tile = scaled[oy:oy + tile_h, ox:ox + tile_w]
    boxes = sample.boxes * s - np.array([ox, oy, ox, oy], np.float32)
    # Keep people whose box lies at least 90 % inside the tile.
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    inside = (np.clip(boxes[:, 2], 0, tile_w) - np.clip(boxes[:, 0], 0, tile_w)) * (
        np.clip(boxes[:, 3], 0, tile_h) - np.clip(boxes[:, 1], 0, tile_h))
    full = inside >= 0.9 * bw * bh
    nx, ny = max(1, w // tile_w), max(1, h // tile_h)
    gx, gy = (w - nx * tile_w) // 2, (h - ny * tile_h) // 2
    all_boxes: list[F32] = []
    for r in range(ny):
        for c in range(nx):
            x0, y0 = gx + c * tile_w, gy + r * tile_h
            out[y0:y0 + tile_h, x0:x0 + tile_w] = tile
            b = np.clip(boxes + np.array([x0, y0, x0, y0], np.float32),
                        0, np.array([w, h, w, h], np.float32))
            all_boxes.append(b)
    gt = np.concatenate(all_boxes)
    # People cut by the tile edge are neither required nor counted as false positives.
    keep = np.tile(full, nx * ny)
    if not bool(keep.any()):
        return None
    return out, np.concatenate([gt[keep], gt[~keep]]), int(keep.sum())


class RawBoxModel:
    """CenterNet or MoveNet MultiPose as converted (measurement only): frame -> person boxes.

    CenterNet takes the frame stretched to 512x512 RGB 0-255 and gives 100 ``x1, y1, x2, y2,
    score, class`` rows in input px; MoveNet takes a 256x256 letterbox, int32 RGB, and gives 6
    people whose box is ``ymin, xmin, ymax, xmax`` (normalised) and score at columns 51-55.
    Hard NMS (OpenCV) at IoU 0.5 and ``min_score`` follow.
    """

    def __init__(self, path: Path, kind: str, min_score: float = 0.3) -> None:
        self.runner = evaluate.Runner(path.read_bytes())
        self.kind = kind
        self.min_score = min_score

    def __call__(self, img: U8) -> Detections:
        """Person boxes of one frame."""
        h, w = img.shape[:2]
        if self.kind == "centernet":
            x = cv2.cvtColor(cv2.resize(img, (512, 512)), cv2.COLOR_BGR2RGB).astype(np.float32)
            d = next(iter(self.runner(x[None]).values()))[0]
            d = d[(d[:, 5] == 0) & (d[:, 4] >= self.min_score)]
            boxes = d[:, :4] * np.array([w / 512, h / 512, w / 512, h / 512], np.float32)
            scores = d[:, 4]
        else:
            t, lb = preprocess_box(img, 256)
            rgb = t[0, :, :, ::-1].astype(np.int32)[None]
            d = next(iter(self.runner(rgb).values()))[0]
            d = d[d[:, 55] >= self.min_score]
            yx = d[:, 51:55].reshape(-1, 2, 2)[:, :, ::-1] * 256
            boxes = lb.to_frame(yx).reshape(-1, 4)
            scores = d[:, 55]
        if scores.size == 0:
            return Detections.empty(0)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.min_score, 0.5),
                          np.intp).reshape(-1)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        b = np.clip(boxes[keep], 0, [w, h, w, h]).astype(np.float32)
        return Detections(b, scores[keep].astype(np.float32), np.zeros((keep.size, 0, 2),
                                                                         np.float32),
                          box_regions(b, 1.25))


class Tiled:
    """A box detector run on overlapping square tiles, merged by NMS (measurement only).

    Tiles have side ``fraction`` x the frame height and overlap by at least 25 %; a box that
    touches a tile edge inside the frame is dropped (its person is whole in a neighbour tile).
    """

    def __init__(self, detector: BoxPersonDetector, fraction: float) -> None:
        self.detector = detector
        self.fraction = fraction

    def tiles(self, w: int, h: int) -> list[tuple[int, int, int]]:
        """``(x0, y0, side)`` of every tile of a ``w`` x ``h`` frame."""
        side = min(w, h, round(self.fraction * h))

        def starts(n: int) -> list[int]:
            k = max(1, math.ceil((n - side) / (0.75 * side)) + 1) if n > side else 1
            return [round(i * (n - side) / (k - 1)) if k > 1 else 0 for i in range(k)]

        return [(x, y, side) for y in starts(h) for x in starts(w)]

    def __call__(self, img: U8) -> Detections:
        """Person boxes of one frame."""
        h, w = img.shape[:2]
        boxes: list[F32] = []
        scores: list[F32] = []
        for x0, y0, side in self.tiles(w, h):
            d = self.detector(np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side]))
            b = d.boxes
            inner = ((b[:, 0] <= 1) & (x0 > 0)) | ((b[:, 1] <= 1) & (y0 > 0)) | (
                (b[:, 2] >= side - 1) & (x0 + side < w)) | ((b[:, 3] >= side - 1) & (y0 + side < h))
            boxes.append(b[~inner] + np.array([x0, y0, x0, y0], np.float32))
            scores.append(d.scores[~inner])
        b, s = np.concatenate(boxes), np.concatenate(scores)
        if s.size == 0:
            return Detections.empty(0)
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), s.tolist(), 0.0,
                                           self.detector.config.nms_iou), np.intp).reshape(-1)
        keep = keep[np.argsort(-s[keep], kind="stable")]
        return Detections(b[keep], s[keep], np.zeros((keep.size, 0, 2), np.float32),
                          box_regions(b[keep], self.detector.config.roi_scale))


def crowd_frames(folder: Path) -> list[tuple[str, U8, F32, int]]:
    """Frames of the crowd benchmark (``gt.json`` beside its ``frames/``).

    Same layout as the canvases: required people first, then those marked ``ignore`` (neither
    required nor counted as false positives).
    """
    gt = json.loads((folder / "gt.json").read_text(encoding="utf-8"))
    out: list[tuple[str, U8, F32, int]] = []
    for f in gt["frames"]:
        img = cv2.imread(str(folder / f["file"]), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f"{folder / f['file']}: unreadable")
        people = sorted(f["persons"], key=lambda p: bool(p["ignore"]))
        xywh = np.array([p["bbox"] for p in people], np.float32).reshape(-1, 4)
        boxes: F32 = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        n_req = sum(not p["ignore"] for p in people)
        out.append((str(f["file"]), np.asarray(img, np.uint8), boxes, n_req))
    return out


class Union:
    """Several detectors on the same frame, merged by NMS (measurement only)."""

    def __init__(self, parts: list[Callable[[U8], Detections]], nms_iou: float,
                 roi_scale: float) -> None:
        self.parts = parts
        self.nms_iou = nms_iou
        self.roi_scale = roi_scale

    def __call__(self, img: U8) -> Detections:
        """Person boxes of one frame."""
        ds = [p(img) for p in self.parts]
        b = np.concatenate([d.boxes for d in ds])
        s = np.concatenate([d.scores for d in ds])
        if s.size == 0:
            return Detections.empty(0)
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), s.tolist(), 0.0, self.nms_iou),
                          np.intp).reshape(-1)
        keep = keep[np.argsort(-s[keep], kind="stable")]
        return Detections(b[keep], s[keep], np.zeros((keep.size, 0, 2), np.float32),
                          box_regions(b[keep], self.roi_scale))


def match_boxes(gt: F32, det: Detections) -> np.ndarray[Any, Any]:
    """Which ground-truth people a box detector found (IoU >= 0.5, one to one)."""
    found = np.zeros(gt.shape[0], bool)
    if len(det) == 0 or gt.shape[0] == 0:
        return found
    m = box_iou(gt, det.boxes)
    r, c = linear_sum_assignment(-m)
    ok = m[r, c] >= 0.5
    found[r[ok]] = True
    return found


def match_regions(gt: F32, det: Detections) -> np.ndarray[Any, Any]:
    """Which people BlazePose found: region centre inside the box, side 0.6-3x its height."""
    found = np.zeros(gt.shape[0], bool)
    if len(det) == 0 or gt.shape[0] == 0:
        return found
    cx, cy, side = det.regions[:, 0], det.regions[:, 1], det.regions[:, 2]
    gh = gt[:, 3] - gt[:, 1]
    inside = ((cx[None] >= gt[:, 0:1]) & (cx[None] <= gt[:, 2:3]) & (cy[None] >= gt[:, 1:2])
              & (cy[None] <= gt[:, 3:4]) & (side[None] >= 0.6 * gh[:, None])
              & (side[None] <= 3.0 * gh[:, None]))
    r, c = linear_sum_assignment(-inside.astype(np.float64))
    ok = inside[r, c]
    found[r[ok]] = True
    return found


def recall_table(detect: Callable[[U8], Detections], by_regions: bool,
                 frames: list[tuple[str, U8, F32, int]]) -> dict[str, Any]:
    """Recall per height bin and precision of one detector over the canvases."""
    hit = {f"{a}-{b}": [0, 0] for a, b in BINS}
    tp = n_det = 0
    times: list[float] = []
    for _, img, gt, n_req in frames:
        t0 = time.perf_counter()
        det = detect(img)
        times.append(time.perf_counter() - t0)
        found = (match_regions if by_regions else match_boxes)(gt, det)
        heights = gt[:, 3] - gt[:, 1]
        for k in range(n_req):
            for a, b in BINS:
                if a <= heights[k] < b:
                    hit[f"{a}-{b}"][0] += int(found[k])
                    hit[f"{a}-{b}"][1] += 1
        # Detections matched to people cut at a tile edge are neither right nor wrong.
        tp += int(found[:n_req].sum())
        n_det += len(det) - int(found[n_req:].sum())
    return {"recall": {k: (round(v[0] / v[1], 3) if v[1] else None) for k, v in hit.items()},
            "people": {k: v[1] for k, v in hit.items()},
            "precision": round(tp / n_det, 3) if n_det else None, "detections": n_det,
            "ms_per_call_median": round(1000 * float(np.median(times)), 1)}


def roi_scale_table(samples_: list[Sample], box_det: BoxPersonDetector, detector: PoseDetector,
                    landmarker: PoseLandmarker, scales: tuple[float, ...]) -> dict[str, Any]:
    """Landmark error vs a tracking-refined reference, for box regions at each scale."""
    err: dict[str, list[float]] = {f"box_{s}": [] for s in scales}
    err["keypoint_region"] = []
    present: dict[str, list[bool]] = {k: [] for k in err}
    for smp in samples_:
        det_kp = detector(smp.image)
        poses_kp = landmarker(smp.image, det_kp.regions)
        ref = landmarker(smp.image, poses_kp.next_regions)
        boxes = box_det(smp.image)
        if len(boxes) == 0:
            continue
        m = box_iou(person_boxes(ref.keypoints), boxes.boxes)
        r, c = linear_sum_assignment(-m)
        for i, j in zip(r, c, strict=True):
            if m[i, j] < 0.5:
                continue
            vis = ref.visibility[i] > 0.5
            hgt = float(np.ptp(ref.keypoints[i, :, 1]))
            cands = {"keypoint_region": det_kp.regions[i:i + 1]}
            for s in scales:
                cands[f"box_{s}"] = box_regions(boxes.boxes[j:j + 1], s)
            for k, reg in cands.items():
                p = landmarker(smp.image, reg)
                d = np.linalg.norm(p.keypoints[0] - ref.keypoints[i], axis=1)[vis]
                err[k].append(float(d.mean()) / hgt)
                present[k].append(bool(p.presence[0] > 0.5))
    return {k: {"error_pct_of_height_median": round(100 * float(np.median(v)), 2),
                "error_pct_of_height_mean": round(100 * float(np.mean(v)), 2),
                "presence_rate": round(float(np.mean(present[k])), 3), "people": len(v)}
            for k, v in err.items() if v}


def invoke_ms(files: dict[str, Path], threads: int, runs: int = 60, rounds: int = 5
              ) -> dict[str, float]:
    """Median invoke time per model, interleaved in rounds.

    As ``models.evaluate.latency_ms``, but for any input dtype (MoveNet takes int32).
    """
    rng = np.random.default_rng(0)
    its: dict[str, Any] = {}
    for name, path in files.items():
        it = create_interpreter(path, threads)
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], (rng.random(d["shape"]) * 255).astype(d["dtype"]))
        it.invoke()
        its[name] = it
    times: dict[str, list[float]] = {k: [] for k in its}
    for _ in range(rounds):
        for name, it in its.items():
            for _ in range(runs // rounds):
                t0 = time.perf_counter()
                it.invoke()
                times[name].append(time.perf_counter() - t0)
    return {k: round(1000.0 * float(np.median(v)), 2) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cache", type=Path, default=ROOT / "cache")
    p.add_argument("--json", type=Path, default=ROOT / "out" / "person_bench.json")
    p.add_argument("--min-score", type=float, default=None)
    p.add_argument("--only", nargs="*", default=None, help="detector names to run (default: all)")
    p.add_argument("--no-roi", action="store_true", help="skip the roi_scale table")
    p.add_argument("--crowd", type=Path, default=None,
                   help="crowd benchmark folder (gt.json + frames/); else canvases of the clips")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    src = args.cache / "build" / "src"
    for m in (sources.SPORTS2D_DEMO, *sources.POSE2SIM_CAMS):
        sources.extract(m, args.cache / "dl", src)
    man = load_manifest()
    detector = PoseDetector(load_model("detector_float", 1, man))
    landmarker = PoseLandmarker(load_model("landmark_full_float", 1, man))
    smp = samples(src, detector, landmarker)
    logger.info("%d source frames with %d people", len(smp), sum(s.boxes.shape[0] for s in smp))
    frames: list[tuple[str, U8, F32, int]] = []
    for size in CANVASES:
        for hgt in HEIGHTS:
            if hgt > size[1] - 20:
                continue
            for k in (0, len(smp) // 3, 2 * len(smp) // 3):
                c = canvas(smp[k], size, hgt)
                if c is not None:
                    img, gt, n_req = c
                    frames.append((f"{size[0]}x{size[1]}:{hgt}:{smp[k].label}", img, gt, n_req))
    if args.crowd is not None:
        frames = crowd_frames(args.crowd)
    logger.info("%d frames", len(frames))
    cfg = BoxDetectorConfig() if args.min_score is None else BoxDetectorConfig(
        min_score=args.min_score)
    fman = load_manifest(args.cache / "person" / "models")
    dets: dict[str, tuple[Callable[[U8], Detections], bool]] = {
        "box_nanodet_int8": (BoxPersonDetector(load_model("box_nanodet_int8", 1, man), cfg),
                             False),
        "box_nanodet_float": (BoxPersonDetector(load_model("box_nanodet_float", 1, fman), cfg),
                              False),
        "blazepose_float": (detector, True),
        "blazepose_int8": (PoseDetector(load_model("detector_int8", 1, man)), True),
    }
    tiled_base = BoxPersonDetector(load_model("box_nanodet_int8", 1, man), cfg)
    dets["box_nanodet_int8_tiles_1.0h"] = (Tiled(tiled_base, 1.0), False)
    dets["box_nanodet_int8_tiles_0.6h"] = (Tiled(tiled_base, 0.6), False)
    dets["box_nanodet_int8_whole+tiles_0.6h"] = (
        Union([tiled_base, Tiled(tiled_base, 0.6)], cfg.nms_iou, cfg.roi_scale), False)
    work = args.cache / "person" / "work"
    extra_files: dict[str, Path] = {}
    for name, file, kind in (("centernet_float", "centernet_f32.tflite", "centernet"),
                             ("movenet_multipose_float", "movenet_multipose_f32.tflite",
                              "movenet")):
        if (work / file).is_file():
            dets[name] = (RawBoxModel(work / file, kind), False)
            extra_files[name] = work / file
    if args.only is not None:
        dets = {k: v for k, v in dets.items() if k in args.only}
        extra_files = {k: v for k, v in extra_files.items() if k in args.only}
    report: dict[str, Any] = {"canvases": len(frames), "source_frames": len(smp),
                              "min_score": cfg.min_score, "detectors": {}}
    for name, (fn, by_regions) in dets.items():
        report["detectors"][name] = recall_table(fn, by_regions, frames)
        logger.info("%s: %s", name, report["detectors"][name])
    files = {"box_nanodet_int8": man.path("box_nanodet_int8"),
             "box_nanodet_float": fman.path("box_nanodet_float"),
             "blazepose_float": man.path("detector_float"),
             "blazepose_int8": man.path("detector_int8"), **extra_files}
    if args.only is not None:
        files = {k: v for k, v in files.items() if k in args.only or k == "blazepose_float"}
    report["invoke_ms_1_thread"] = invoke_ms(files, 1, runs=60)
    report["file_mb"] = {k: round(v.stat().st_size / 1e6, 2) for k, v in files.items()}
    if not args.no_roi:
        box_det = BoxPersonDetector(load_model("box_nanodet_int8", 1, man), cfg)
        report["roi_scale"] = roi_scale_table(smp, box_det, detector, landmarker,
                                              (1.0, 1.25, 1.5, 1.75, 2.0))
        logger.info("roi scale: %s", report["roi_scale"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
