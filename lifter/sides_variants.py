"""More development data for the left/right guard: the development views mirrored and halved.

The development set of :mod:`lifter.sides_dev` (Pose2Sim ``Demo_MultiPerson``, 4 views, 2 people,
100 frames at 60 fps) has few real label flips left that the guard could win. The 2D landmark
model is not mirror-symmetric and not scale-invariant: the same frames mirrored, or at half
size, make it err on other frames, in other ways. Their truth is exact: the fused 3D of the
original frames, mirrored (x negated, left and right exchanged) for a mirrored view; unchanged
for a halved one (root-relative metres do not depend on the image size).

Each variant view is written once (lossless FFV1 would need FFmpeg's encoder in OpenCV; MJPEG at
quality 95 is what OpenCV writes everywhere), run through ``edge-pose run --every-frame`` with the
development runs' settings (:data:`bench.fuse_data.RUN_SETTINGS`: the guard off), and cached under
``cache/build/fuse/multi_<variant>/``. Each of its people is matched to the original view's
person of the same frame (mean joint distance after mapping the variant's pixels back, at most
:data:`MATCH_SHARE` of the person's height) and takes that row's truth.

Never the test set (``Demo_SinglePerson``).

Measured (session 10; default guard, swapped frames per view at 60 / 30 fps, injected flicker
60 / 30, with half-turned frames 60 / 30): the original views 0/3/0/5, 0/5/0/5, 56 / 61, 78 / 87;
mirrored 0/5/0/5, 0/5/0/5, 60 / 60, 63 / 97; halved 0/6/0/5, 0/4/0/5, 121 / 55, 118 / 79;
mirrored and halved 0/6/0/5, 0/6/0/5, 66 / 66, 69 / 88 (no guard: 20, 24 and 17 swapped frames
in view 2). Of the variants' swapped frames at 60 fps, all but 3 are the fused truth's own side
trades (frames 52, 56, 79-83): halved 74-75 (a two-frame flip after a half-turned frame, the 2D
costs within 0.07 of each other), mirrored and halved 53. The halved set's injected 121 at
60 fps is mostly one draw: a flip injected into a track's first frame, which the guard takes as
the labelling (a new track starts as labelled) and holds for 33 frames. The guard's parameters
swept one at a time on all four sets (sigma 0.04-0.08, rates, gate, bridge, misfit, facing
scale, turn rate): 37-42 swapped frames in all, against 40 for the default; sigma 0.06-0.08
lose 16-194 injected frames. The guard is at the floor of this data.

Usage::

    .venv/bin/python -m lifter.sides_variants
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.fuse_data import CACHE, RUN_SETTINGS, _annotate, scene
from edge.bench.lift import multi_tracks
from edge.fuse.offline import read_view_frames
from edge.lift3d import COCO17_FLIP
from edge.runtime import sha256_file

logger = logging.getLogger(__name__)

FLIP = list(COCO17_FLIP)
#: Variant name -> (mirrored, scale).
VARIANTS: dict[str, tuple[bool, float]] = {"mirror": (True, 1.0), "half": (False, 0.5),
                                           "mirror_half": (True, 0.5)}
#: A variant's person matches an original person when their mean joint distance, in the
#: original's pixels, is under this share of the original person's height.
MATCH_SHARE = 0.15


def _write_variant(video: Path, out: Path, mirrored: bool, scale: float) -> None:
    """Writes ``video``'s frames mirrored and/or scaled to ``out`` (MJPEG q95, same rate)."""
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 60.0
    writer: cv2.VideoWriter | None = None
    tmp = out.with_suffix(".part.avi")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if scale != 1.0:
                frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if mirrored:
                frame = cv2.flip(frame, 1)
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), fps,
                                         (frame.shape[1], frame.shape[0]))
                writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
            writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    tmp.replace(out)


def variant_jsonls(name: str, cache: Path = CACHE) -> list[Path]:
    """Each view's ``annotations.jsonl`` of one variant (made once, then cached)."""
    mirrored, scale = VARIANTS[name]
    sc = scene("multi", cache)
    manifest = sha256_file(Path(__file__).resolve().parents[1] / "models" / "manifest.json")
    out = []
    for i, video in enumerate(sc.videos):
        device = f"cam{i + 1:02d}"
        folder = cache / "build" / "fuse" / f"multi_{name}" / device
        key = json.dumps({"video": sha256_file(video), "manifest": manifest, "variant": name,
                          **RUN_SETTINGS}, sort_keys=True)
        stamp, jsonl = folder / "key.json", folder / "annotations.jsonl"
        if not (stamp.is_file() and stamp.read_text(encoding="utf-8") == key and jsonl.is_file()):
            folder.mkdir(parents=True, exist_ok=True)
            stamp.unlink(missing_ok=True)
            src = folder / "source.avi"
            _write_variant(video, src, mirrored, scale)
            logger.info("running edge-pose on %s", src)
            _annotate(src, device, folder)
            src.unlink()
            stamp.write_text(key, encoding="utf-8")
        out.append(jsonl)
    return out


def variant_tracks(name: str, cache: Path = CACHE) -> dict[str, Any]:
    """One variant's development rows, as :func:`edge.bench.lift.multi_tracks` gives them.

    Returns:
        ``kp`` (n, 17, 2) px of the variant's frames, ``conf`` (n, 17), ``gt`` (n, 17, 3)
        metres in the variant's look-at frame, ``view`` (n,), ``frame`` (n,), ``track`` (n,)
        ``view * 1000 + track ID``; rows of a track contiguous and in time order.
    """
    mirrored, scale = VARIANTS[name]
    dev = multi_tracks(cache / "lifter")
    rows: dict[str, list[Any]] = {k: [] for k in ("kp", "conf", "gt", "view", "frame", "track")}
    for v, jsonl in enumerate(variant_jsonls(name, cache)):
        for vf in read_view_frames(jsonl):
            width = vf.size[0] / scale  # the original frame's width
            orig = np.flatnonzero((dev["view"] == v) & (dev["frame"] == vf.frame_id))
            for person in vf.persons:
                kp = person.kp / scale
                if mirrored:
                    kp = kp[FLIP].copy()
                    kp[:, 0] = width - 1 - kp[:, 0]
                best, best_d = -1, np.inf
                for r in orig:
                    ref = dev["kp"][r]
                    d = float(np.nanmean(np.linalg.norm(kp - ref, axis=-1)))
                    height = float(np.nanmax(ref[:, 1]) - np.nanmin(ref[:, 1]))
                    if d < MATCH_SHARE * height and d < best_d:
                        best, best_d = int(r), d
                if best < 0:
                    continue
                gt = dev["gt"][best]
                if mirrored:
                    gt = gt[FLIP] * np.array([-1.0, 1.0, 1.0])
                rows["kp"].append(person.kp)
                rows["conf"].append(person.conf)
                rows["gt"].append(gt)
                rows["view"].append(v)
                rows["frame"].append(vf.frame_id)
                rows["track"].append(v * 1000 + person.id)
    arr = {k: np.asarray(x) for k, x in rows.items()}
    order = np.lexsort((arr["frame"], arr["track"]))
    return {k: x[order] for k, x in arr.items()}


def main() -> None:
    """Prints every development figure of no guard and of the default, on each variant."""
    from edge.lift3d import LeftRight, Lifter
    from lifter.sides_dev import evaluate

    logging.basicConfig(level=logging.INFO)
    lifter = Lifter.load("lifter_single_int8", 1)
    for name in VARIANTS:
        d = variant_tracks(name)
        print(name, f"{len(d['kp'])} rows",
              "none", evaluate(None, lifter, dev=d),
              "default", evaluate(LeftRight, lifter, use_3d=True, dev=d), flush=True)


if __name__ == "__main__":
    main()
