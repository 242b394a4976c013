"""Builds the crowd benchmark: still frames, walking clips and ``gt.json``.

Usage::

    python -m bench.crowd.generate --out cache/crowd [--seed 0] [--frames 300] [--clips 4]

Deterministic for a seed (and the same source clips and models): the same frames, clips and
``gt.json`` byte for byte. The people cut out of the source clips are cached in
``cache/crowd_bank*.npz`` (a few minutes to build once). See README.md here for the formats.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from bench.crowd import sources
from bench.crowd.compose import (
    Pasted,
    Placement,
    compose,
    fit_background,
    pasted_extent,
)
from bench.crowd.cutouts import BANK_VERSION, Bank, build_bank
from edge.skeleton import COCO17_NAMES, Coco17
from models.sources import SourceError

_C = Coco17
#: COCO-17 limbs (0-based), for the COCO file's ``skeleton`` (1-based there).
COCO17_SKELETON: tuple[tuple[int, int], ...] = (
    (_C.LEFT_ANKLE, _C.LEFT_KNEE), (_C.LEFT_KNEE, _C.LEFT_HIP), (_C.RIGHT_ANKLE, _C.RIGHT_KNEE),
    (_C.RIGHT_KNEE, _C.RIGHT_HIP), (_C.LEFT_HIP, _C.RIGHT_HIP),
    (_C.LEFT_SHOULDER, _C.LEFT_HIP), (_C.RIGHT_SHOULDER, _C.RIGHT_HIP),
    (_C.LEFT_SHOULDER, _C.RIGHT_SHOULDER), (_C.LEFT_SHOULDER, _C.LEFT_ELBOW),
    (_C.RIGHT_SHOULDER, _C.RIGHT_ELBOW), (_C.LEFT_ELBOW, _C.LEFT_WRIST),
    (_C.RIGHT_ELBOW, _C.RIGHT_WRIST), (_C.LEFT_EYE, _C.RIGHT_EYE), (_C.NOSE, _C.LEFT_EYE),
    (_C.NOSE, _C.RIGHT_EYE), (_C.LEFT_EYE, _C.LEFT_EAR), (_C.RIGHT_EYE, _C.RIGHT_EAR),
    (_C.LEFT_EAR, _C.LEFT_SHOULDER), (_C.RIGHT_EAR, _C.RIGHT_SHOULDER))

logger = logging.getLogger(__name__)

GT_VERSION = 1
FRAME_SIZES: tuple[tuple[int, int], ...] = ((768, 576), (1280, 720))
MIN_HEIGHT, MAX_HEIGHT = 40, 400
JPEG_QUALITY = 92


@dataclass(frozen=True)
class Settings:
    """What to generate.

    Attributes:
        seed: Random seed.
        frames: Still frames.
        people: (min, max) people per still frame.
        clips: Walking clips.
        clip_frames: Frames per clip.
        fps: Clip frame rate.
        walkers: (min, max) people per clip.
        overlap_share: Fraction of still-frame people placed to overlap someone by 10-40 %.
        pose2sim: Cut people out of the Pose2Sim clips too (else the Sports2D demo only).
        source_frames: Frames per source clip to cut people from (None: all).
        layout: Still frames' people: ``crowd`` (on a ground plane, some beside others:
            :meth:`Scenes.still`) or ``groups`` (rows of upright people posing for a group
            photo: :meth:`Scenes.group`; ``people`` is not used).
        lying: Share of each clip's people lying still on the floor (turned a quarter turn,
            :meth:`Scenes.walkers`); 0 draws nothing more, so the clips are as before.
    """

    seed: int = 0
    frames: int = 300
    people: tuple[int, int] = (3, 8)
    clips: int = 4
    clip_frames: int = 150
    fps: float = 30.0
    walkers: tuple[int, int] = (3, 6)
    overlap_share: float = 0.35
    pose2sim: bool = True
    source_frames: int | None = None
    layout: Literal["crowd", "groups"] = "crowd"
    lying: float = 0.0


def _box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    return x, y, x + w, y + h


def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection of two ``x1, y1, x2, y2`` boxes over the smaller one's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / smaller)


class Scenes:
    """Draws people and places them; one ``numpy`` Generator makes it reproducible."""

    def __init__(self, bank: Bank, rng: np.random.Generator, overlap_share: float,
                 lying: float = 0.0) -> None:
        """Groups the bank's cutouts by source package (Sports2D, Pose2Sim)."""
        self.bank = bank
        self.rng = rng
        self.share = overlap_share
        self.lying = lying
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(bank.cutouts):
            name = bank.clip_names[c.clip]
            groups.setdefault("pose2sim" if name.startswith("Demo_") else name, []).append(i)
        # Each source group is drawn equally often, whatever its number of cutouts.
        self.groups = [groups[k] for k in sorted(groups)]
        if not self.groups:
            raise SourceError("no person could be cut out of the source clips")

    def draw_cutout(self) -> int:
        """Index of a random cutout (group first, then a cutout of it)."""
        g = self.groups[int(self.rng.integers(len(self.groups)))]
        return g[int(self.rng.integers(len(g)))]

    def height(self, frame_h: int) -> float:
        """A full-body height, log-uniform in 40..min(400, 0.85 frame height) px."""
        hi = min(MAX_HEIGHT, 0.85 * frame_h)
        return float(math.exp(self.rng.uniform(math.log(MIN_HEIGHT), math.log(hi))))

    def ground(self, frame_h: int) -> tuple[float, float]:
        """A frame's horizon row (10-40 % of the height) and camera height (1-1.5 bodies)."""
        return float(self.rng.uniform(0.1, 0.4) * frame_h), float(self.rng.uniform(1.0, 1.5))

    def feet(self, horizon: float, ratio: float, h: float, frame_h: int) -> float:
        """Row of the feet of a person ``h`` px tall on the ground plane (+-10 %), in frame."""
        y = horizon + ratio * h * self.rng.uniform(0.9, 1.1)
        return float(min(y, frame_h - self.rng.uniform(0.0, 0.03) * frame_h))

    def _brightness(self) -> tuple[bool, float, float]:
        return (bool(self.rng.random() < 0.5), float(self.rng.uniform(0.8, 1.2)),
                float(self.rng.uniform(-12.0, 12.0)))

    def still(self, width: int, height: int, n: int) -> list[Placement]:
        """Placements of ``n`` people for one still frame, back to front.

        People stand on a ground plane seen by a level camera: with the horizon at row
        ``y_h`` and the camera ``r`` body heights above the ground (both drawn per frame), a
        person ``h`` px tall has its feet near row ``y_h + r * h`` (kept inside the frame), so
        small people are far up the frame and tall ones low. About ``overlap_share`` of them
        are put beside an earlier person so that the two boxes overlap by 10-40 % of the
        smaller; the others are placed where they overlap nobody by more than 5 % when 30 tries
        allow. One in ten may stand partly outside the frame on the left or right.
        """
        horizon, ratio = self.ground(height)
        placed: list[Placement] = []
        boxes: list[tuple[float, float, float, float]] = []
        for _ in range(n):
            ci = self.draw_cutout()
            cut = self.bank.cutouts[ci]
            flip, gain, bias = self._brightness()
            target = self.height(height)
            if placed and self.rng.random() < self.share:
                j = int(self.rng.integers(len(placed)))
                bj = boxes[j]
                hj = bj[3] - bj[1]
                target = float(np.clip(hj * self.rng.uniform(0.8, 1.25), MIN_HEIGHT,
                                       min(MAX_HEIGHT, 0.85 * height)))
                s = target / cut.mask_height
                w, h = pasted_extent(Placement(cut, s, 0, 0))
                t = self.rng.uniform(0.1, 0.4)
                bottom = bj[3] + self.rng.uniform(-0.1, 0.1) * hj
                y = bottom - h
                smaller_w = min(w, bj[2] - bj[0])
                x = (bj[2] - t * smaller_w if self.rng.random() < 0.5
                     else bj[0] + t * smaller_w - w)
            else:
                s = target / cut.mask_height
                w, h = pasted_extent(Placement(cut, s, 0, 0))
                out = 0.3 * w if self.rng.random() < 0.1 else 0.0
                for _try in range(30):
                    x = self.rng.uniform(-out, max(width - w + out, -out + 1))
                    y = self.feet(horizon, ratio, target, height) - h
                    b = _box(x, y, w, h)
                    if all(overlap(b, o) <= 0.05 for o in boxes):
                        break
            y = float(np.clip(y, 0, max(height - h, 0)))
            placed.append(Placement(cut, s, round(x), round(y), flip, gain, bias))
            boxes.append(_box(round(x), round(y), w, h))
        # Painter's order: the lower the feet, the nearer, the later pasted.
        order = sorted(range(n), key=lambda i: (boxes[i][3], i))
        return [Placement(placed[i].cutout, placed[i].scale, placed[i].x, placed[i].y,
                          placed[i].flip, placed[i].gain, placed[i].bias, identity=k + 1)
                for k, i in enumerate(order)]

    def upright(self) -> npt.NDArray[np.intp]:
        """Indices of the cutouts standing upright.

        Ankles below hips below shoulders, and the keypoints less than 0.4 of the body's
        height wide (no arms or legs flung out).
        """
        kp = np.array([c.keypoints for c in self.bank.cutouts], np.float64).reshape(-1, 17, 2)
        tall = np.array([c.mask_height for c in self.bank.cutouts], np.float64)
        y = kp[:, :, 1]
        ok = ((kp[:, :, 0].max(1) - kp[:, :, 0].min(1) < 0.4 * tall)
              & (y[:, [_C.LEFT_ANKLE, _C.RIGHT_ANKLE]].min(1)
                 > y[:, [_C.LEFT_HIP, _C.RIGHT_HIP]].max(1))
              & (y[:, [_C.LEFT_HIP, _C.RIGHT_HIP]].min(1)
                 > y[:, [_C.LEFT_SHOULDER, _C.RIGHT_SHOULDER]].max(1)))
        return np.flatnonzero(ok)

    def group(self, width: int, height: int, upright: npt.NDArray[np.intp]) -> list[Placement]:
        """Placements of a group photo: 2-3 rows of 3-6 upright people, back to front.

        The front row's people are as tall as its spacing makes them (spacing / 0.3-0.4),
        their feet at 95-115 % of the frame height (cut at the shins or knees); each row
        behind stands 0.3-0.45 of the height of the row in front higher, 0.9 as tall, so the
        row in front hides its legs; rows behind the front row alternate one person fewer.
        Everything is scaled down until the back row's heads are inside the frame (3 % margin).
        Each person: 0.95-1.05 of the row's height, centred in its slot +-10 % of the spacing,
        mirrored half the time, brightness gain 0.85-1.15 and offset +-10.
        """
        rng = self.rng
        rows, per = int(rng.integers(2, 4)), int(rng.integers(3, 7))
        front = width / per / rng.uniform(0.3, 0.4)
        tall = [front * 0.9 ** r for r in range(rows)]
        feet = [height * rng.uniform(0.95, 1.15)]
        for r in range(1, rows):
            feet.append(feet[-1] - rng.uniform(0.3, 0.45) * tall[r - 1])
        k = min(1.0, (feet[0] - 0.03 * height) / (feet[0] - feet[-1] + tall[-1]))
        tall = [t * k for t in tall]
        feet = [feet[0] - (feet[0] - f) * k for f in feet]
        placed: list[Placement] = []
        for r in reversed(range(rows)):
            n = per - r % 2
            for j in range(n):
                c = self.bank.cutouts[int(upright[int(rng.integers(len(upright)))])]
                s = tall[r] * rng.uniform(0.95, 1.05) / c.mask_height
                w, h = pasted_extent(Placement(c, s, 0, 0))
                cx = (j + 0.5 + rng.uniform(-0.1, 0.1)) * width / n
                placed.append(Placement(c, s, round(cx - w / 2), round(feet[r] - h),
                                        bool(rng.random() < 0.5), float(rng.uniform(0.85, 1.15)),
                                        float(rng.uniform(-10, 10)), identity=len(placed) + 1))
        return placed

    def walkers(self, width: int, height: int, n: int, frames: int, fps: float
                ) -> list[list[Placement]]:
        """Placements per clip frame for ``n`` people walking across the frame.

        Each walker is one source track, played forward then backward (and so on) at the clip's
        rate, pasted at one scale (its track's median height maps to a drawn height), its feet
        on a fixed row of the ground plane (as in :meth:`still`), moving at a constant 0.3-0.8
        body heights per second, left or right, some starting outside the frame. Identities
        are 1..n.

        With ``lying`` > 0, each person is, with that probability, someone lying still on the
        floor instead (a fall): one frame of the track, turned a quarter turn either way, its
        body length the drawn height, the bottom of its box on the ground row of that size,
        wholly inside the frame's width, the same in every frame.
        """
        tracks = list(self.bank.tracks(min_len=20).values())
        horizon, ratio = self.ground(height)
        if not tracks:
            raise SourceError("no source track is long enough (20 frames) for walking clips")
        per_frame: list[list[tuple[float, Placement]]] = [[] for _ in range(frames)]
        for ident in range(1, n + 1):
            track = tracks[int(self.rng.integers(len(tracks)))]
            cuts = [self.bank.cutouts[i] for i in track]
            src_fps = self.bank.clip_fps[cuts[0].clip]
            step = max(1, round(src_fps / fps))
            ref = float(np.median([c.mask_height / c.scale for c in cuts]))
            target = self.height(height)
            flip, gain, bias = self._brightness()
            speed = target * self.rng.uniform(0.3, 0.8) / fps * (1 if self.rng.random() < 0.5
                                                                else -1)
            feet = self.feet(horizon, ratio, target, height)
            if self.lying > 0 and self.rng.random() < self.lying:
                c = cuts[int(self.rng.integers(len(cuts)))]
                turn = 90 if self.rng.random() < 0.5 else -90
                s = target / c.mask_height
                w, h = pasted_extent(Placement(c, s, 0, 0, turn=turn))
                x = self.rng.uniform(0, max(width - w, 1))
                p = Placement(c, s, round(x), round(min(feet, height) - h), flip, gain, bias,
                              ident, turn)
                for f in range(frames):
                    per_frame[f].append((feet, p))
                continue
            x0 = self.rng.uniform(-0.2 * width, 1.0 * width)
            start = int(self.rng.integers(len(cuts)))
            period = 2 * (len(cuts) - 1)
            for f in range(frames):
                k = (start + f * step) % period
                c = cuts[k if k < len(cuts) else period - k]
                s = target / ref / c.scale
                _, h = pasted_extent(Placement(c, s, 0, 0))
                rows = np.flatnonzero((c.bgra[:, :, 3] >= 128).any(axis=1))
                bottom = (rows[-1] + 1) * h / c.bgra.shape[0]
                x = x0 + speed * f
                p = Placement(c, s, round(x), round(feet - bottom), flip, gain, bias, ident)
                per_frame[f].append((feet, p))
        return [[p for _, p in sorted(ps, key=lambda q: (q[0], q[1].identity))]
                for ps in per_frame]


def person_json(p: Pasted, names: list[str]) -> dict[str, Any]:
    """One person of ``gt.json`` (``lying``: true only for someone turned to lie)."""
    c = p.placement.cutout
    lying = {"lying": True} if p.placement.turn else {}
    return {
        "id": p.identity,
        "bbox": [round(float(v), 2) for v in p.bbox],
        "height": p.height,
        "keypoints": [round(float(v), 2) if i % 3 != 2 else int(v)
                      for i, v in enumerate(p.keypoints.reshape(-1))],
        "visible_fraction": round(p.visible_fraction, 4),
        "area": p.area,
        "ignore": p.ignore,
        "source": {"clip": names[c.clip], "track": c.track, "frame": c.frame,
                   "flip": p.placement.flip},
        **lying,
    }


def _in_frame(people: list[Pasted]) -> list[Pasted]:
    """People with something in the frame (seen pixels, or a keypoint inside it)."""
    return [p for p in people if p.bbox[2] > 0 or (p.keypoints[:, 2] > 0).any()]


def load_or_build_bank(cache: Path, settings: Settings, threads: int = 1) -> Bank:
    """The cached cutouts for these settings, built when absent."""
    key = f"crowd_bank_v{BANK_VERSION}_{'all' if settings.pose2sim else 'sports2d'}" \
          f"_{settings.source_frames or 'full'}.npz"
    path = cache / key
    bank = Bank.load(path)
    if bank is None:
        t = time.monotonic()
        bank = build_bank(sources.clips(cache, settings.pose2sim), cache,
                          settings.source_frames, threads)
        bank.save(path)
        logger.info("cut %d people out of %d clips in %.0f s -> %s", len(bank.cutouts),
                    len(bank.clip_names), time.monotonic() - t, path)
    return bank


def generate(out: Path, settings: Settings, cache: Path, threads: int = 1) -> dict[str, Any]:
    """Writes the benchmark into ``out`` and returns the ``gt.json`` content.

    Args:
        out: Output folder (``frames/``, ``clips/``, ``gt.json``).
        settings: What to generate.
        cache: Cache folder (downloads, extracted sources, the cutout bank).
        threads: CPU threads for the models while cutting people out.

    Returns:
        The ground truth written to ``out/gt.json``.
    """
    bank = load_or_build_bank(cache, settings, threads)
    photos = sources.backgrounds(cache)
    backgrounds = {}
    for name, path in photos.items():
        im = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if im is None:
            raise SourceError(f"cannot read background {path}")
        backgrounds[name] = np.asarray(im, np.uint8)
    names = sorted(backgrounds)
    rng = np.random.default_rng(settings.seed)
    scenes = Scenes(bank, rng, settings.overlap_share, settings.lying)
    upright = scenes.upright() if settings.layout == "groups" else np.zeros(0, np.intp)
    if settings.layout == "groups" and settings.frames and not len(upright):
        raise SourceError("no cutout stands upright: no group photo can be made")
    (out / "frames").mkdir(parents=True, exist_ok=True)
    frames_gt: list[dict[str, Any]] = []
    for i in range(settings.frames):
        width, height = FRAME_SIZES[i % len(FRAME_SIZES)]
        bg_name = names[int(rng.integers(len(names)))]
        bg = fit_background(backgrounds[bg_name], width, height, rng)
        if settings.layout == "groups":
            still = scenes.group(width, height, upright)
        else:
            n = int(rng.integers(settings.people[0], settings.people[1] + 1))
            still = scenes.still(width, height, n)
        image, people = compose(bg, still)
        file = f"frames/{i:06d}.jpg"
        cv2.imwrite(str(out / file), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        frames_gt.append({"id": i, "file": file, "width": width, "height": height,
                          "background": bg_name,
                          "persons": [person_json(p, bank.clip_names) for p in _in_frame(people)]})
    clips_gt: list[dict[str, Any]] = []
    if settings.clips:
        (out / "clips").mkdir(parents=True, exist_ok=True)
    for ci in range(settings.clips):
        width, height = FRAME_SIZES[(ci + 1) % len(FRAME_SIZES)]
        bg_name = names[int(rng.integers(len(names)))]
        bg = fit_background(backgrounds[bg_name], width, height, rng)
        n = int(rng.integers(settings.walkers[0], settings.walkers[1] + 1))
        plan = scenes.walkers(width, height, n, settings.clip_frames, settings.fps)
        name = f"clip{ci:02d}"
        file = f"clips/{name}.mp4"
        writer = cv2.VideoWriter(str(out / file), cv2.VideoWriter.fourcc(*"mp4v"),
                                 settings.fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {out / file} (mp4v)")
        per_frame = []
        for f, placements in enumerate(plan):
            image, people = compose(bg, placements)
            writer.write(image)
            per_frame.append({"index": f, "persons": [person_json(p, bank.clip_names)
                                                      for p in _in_frame(people)]})
        writer.release()
        clips_gt.append({"name": name, "file": file, "width": width, "height": height,
                         "fps": settings.fps, "n_frames": settings.clip_frames,
                         "background": bg_name, "frames": per_frame})
    gt: dict[str, Any] = {
        "version": GT_VERSION,
        "joints": list(COCO17_NAMES),
        "generator": {
            "seed": settings.seed, "frames": settings.frames, "people": list(settings.people),
            "clips": settings.clips, "clip_frames": settings.clip_frames, "fps": settings.fps,
            "walkers": list(settings.walkers), "overlap_share": settings.overlap_share,
            "pose2sim": settings.pose2sim, "source_frames": settings.source_frames,
            "layout": settings.layout, **({"lying": settings.lying} if settings.lying else {}),
            "source_clips": bank.clip_names,
            "cutout_version": BANK_VERSION,
            "background_package":
                f"{sources.OPENCV_DOC.name}={sources.OPENCV_DOC.version}",
        },
        "frames": frames_gt,
        "clips": clips_gt,
    }
    (out / "gt.json").write_text(json.dumps(gt, separators=(",", ":")) + "\n")
    (out / "gt_coco.json").write_text(json.dumps(coco_ground_truth(gt), separators=(",", ":"))
                                      + "\n")
    return gt


def coco_ground_truth(gt: dict[str, Any]) -> dict[str, Any]:
    """The still frames' ground truth as a COCO person-keypoints annotation file.

    For pycocotools' ``COCOeval`` (OKS-based AP) next to ``bench.crowd.score``: ``area`` is the
    seen mask area (OKS's scale), ``bbox`` the seen extent, and ignored people are
    ``iscrowd: 1`` (COCOeval's regions to ignore). Image ids are the frames' ``id``.
    """
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for f in gt["frames"]:
        images.append({"id": f["id"], "file_name": f["file"], "width": f["width"],
                       "height": f["height"]})
        for p in f["persons"]:
            kp = p["keypoints"]
            anns.append({"id": len(anns) + 1, "image_id": f["id"], "category_id": 1,
                         "keypoints": kp, "num_keypoints": sum(v > 0 for v in kp[2::3]),
                         "bbox": p["bbox"], "area": p["area"], "iscrowd": int(p["ignore"]),
                         "height": p["height"]})
    bones = [[a + 1, b + 1] for a, b in COCO17_SKELETON]
    return {"info": {"description": "edge-pose crowd benchmark (bench/crowd)",
                     "version": str(GT_VERSION)},
            "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person",
                            "keypoints": list(COCO17_NAMES), "skeleton": bones}]}


def summary(gt: dict[str, Any]) -> str:
    """Counts per height bucket, as a short text."""
    buckets = {"40-80": 0, "80-160": 0, "160-400": 0}
    people = ignored = 0
    for fr in gt["frames"]:
        for p in fr["persons"]:
            people += 1
            if p["ignore"]:
                ignored += 1
                continue
            h = p["height"]
            key = "40-80" if h < 80 else "80-160" if h < 160 else "160-400"
            buckets[key] += 1
    clip_pf = sum(len(f["persons"]) for c in gt["clips"] for f in c["frames"])
    return (f"{len(gt['frames'])} frames, {people} people ({ignored} ignored; scored by "
            f"height: {buckets}); {len(gt['clips'])} clips, {clip_pf} person-frames")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(prog="python -m bench.crowd.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=root / "cache" / "crowd",
                    help="output folder (default: cache/crowd)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=300, help="still frames (default 300)")
    ap.add_argument("--clips", type=int, default=4, help="walking clips (default 4)")
    ap.add_argument("--clip-frames", type=int, default=150, help="frames per clip (default 150)")
    ap.add_argument("--sports2d-only", action="store_true",
                    help="cut people out of the Sports2D demo only (no download)")
    ap.add_argument("--source-frames", type=int, default=None,
                    help="frames per source clip to cut people from (default: all)")
    ap.add_argument("--cache", type=Path, default=root / "cache",
                    help="downloads and the cutout bank (default: cache)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layout", choices=("crowd", "groups"), default="crowd",
                    help="still frames: people on a ground plane (crowd, default) or rows of "
                         "upright people posing for a group photo (groups)")
    ap.add_argument("--lying", type=float, default=0.0, metavar="SHARE",
                    help="share of each clip's people lying still on the floor, turned a "
                         "quarter turn (default 0)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("frames", "clips", "clip_frames"):
        if getattr(args, name) < 0:
            print(f"error: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return 2
    if not 0.0 <= args.lying <= 1.0:
        print(f"error: --lying must be in 0..1, got {args.lying}", file=sys.stderr)
        return 2
    settings = Settings(seed=args.seed, frames=args.frames, clips=args.clips,
                        clip_frames=args.clip_frames, pose2sim=not args.sports2d_only,
                        source_frames=args.source_frames, layout=args.layout,
                        lying=args.lying)
    t = time.monotonic()
    try:
        gt = generate(args.out, settings, args.cache, args.threads)
    except (SourceError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {summary(gt)}; {time.monotonic() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
