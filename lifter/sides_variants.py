"""More development data for the left/right guard: the development views mirrored, resized, etc.

The development set of :mod:`lifter.sides_dev` (Pose2Sim ``Demo_MultiPerson``, 4 views, 2 people,
100 frames at 60 fps) has few real label flips left that the guard could win. The 2D landmark
model is not mirror-symmetric, not scale-invariant and not blind to blur, light and noise: the
same frames mirrored, at another size, blurred, dim, noisy or with a side cut off make it err
on other frames, in other ways. Their truth is exact: the fused 3D of the original frames,
mirrored (x negated, left and right exchanged) for a mirrored view; unchanged otherwise
(root-relative metres do not depend on the image's size, light or crop).

Each variant view is written once (lossless FFV1 would need FFmpeg's encoder in OpenCV; MJPEG at
quality 95 is what OpenCV writes everywhere), run through ``edge-pose run --every-frame`` with the
development runs' settings (:data:`bench.fuse_data.RUN_SETTINGS`: the guard off), and cached under
``cache/build/fuse/multi_<variant>/``. Each of its people is matched to the original view's
person of the same frame (mean joint distance after mapping the variant's pixels back, at most
:data:`MATCH_SHARE` of the person's height) and takes that row's truth.

Never the test set (``Demo_SinglePerson``).

Measured (session 14; the original and all 11 variants, 6,757 rows; the ``beyond`` figures of
:func:`lifter.sides_dev.evaluate`, summed: swapped frames at 60 / 30 fps, injected flicker
60 / 30, with half-turned frames 60 / 30, the frames where the fused truth trades sides itself
left out): no guard 250 / 250, 4266 / 3702, 4578 / 4034; the 2D alone 27 / 14, 277 / 119,
579 / 791; the default (the 3D's facing where the 2D is weak) 6 / 5, 97 / 31, 151 / 312, and
with the 3D used only where the two 2D costs are close (before session 14) 11 / 7, 131 / 46,
212 / 354.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from bench.fuse_data import CACHE, RUN_SETTINGS, _annotate, scene
from edge.bench.lift import multi_tracks
from edge.fuse.offline import read_view_frames
from edge.lift3d import COCO17_FLIP
from edge.runtime import sha256_file

logger = logging.getLogger(__name__)

FLIP = list(COCO17_FLIP)


@dataclass(frozen=True)
class Variant:
    """How a variant view is made from a development view, in this order.

    Attributes:
        mirrored: Flipped left to right (last).
        scale: Resized by this factor (INTER_AREA).
        crop: Share of the frame's width cut off its left edge (first).
        blur: Gaussian blur sigma (px of the variant frame; 0: none).
        gain: Brightness factor (1: unchanged); a dim room.
        noise: Sensor noise, standard deviation in grey levels (seeded per frame).
    """

    mirrored: bool = False
    scale: float = 1.0
    crop: float = 0.0
    blur: float = 0.0
    gain: float = 1.0
    noise: float = 0.0

    def make(self, frame: npt.NDArray[Any], index: int) -> npt.NDArray[Any]:
        """The variant of one (h, w, 3) BGR frame (``index``: the frame's, seeds the noise)."""
        if self.crop:
            frame = frame[:, round(self.crop * frame.shape[1]):]
        if self.scale != 1.0:
            frame = cv2.resize(frame, None, fx=self.scale, fy=self.scale,
                               interpolation=cv2.INTER_AREA)
        if self.blur:
            frame = cv2.GaussianBlur(frame, (0, 0), self.blur)
        if self.gain != 1.0 or self.noise:
            f = frame.astype(np.float32) * self.gain
            if self.noise:
                f += np.random.default_rng(index).normal(0.0, self.noise, f.shape)
            frame = np.clip(f + 0.5, 0, 255).astype(np.uint8)
        if self.mirrored:
            frame = cv2.flip(frame, 1)
        return np.ascontiguousarray(frame)

    def to_original(self, kp: npt.NDArray[Any], size: tuple[int, int],
                    width: int) -> npt.NDArray[Any]:
        """A variant frame's (17, 2) px mapped to the original frame's px.

        ``size``: the variant frame's (w, h); ``width``: the original frame's (px). A mirror's
        left and right labels are exchanged.
        """
        kp = kp / self.scale
        if self.mirrored:
            kp = kp[FLIP].copy()
            kp[:, 0] = size[0] / self.scale - 1 - kp[:, 0]
        out: npt.NDArray[Any] = kp + np.array([round(self.crop * width), 0.0])
        return out


#: Variant name -> how it is made. Session 10's three (mirrored, halved, both), then session
#: 14's: three-quarter size, blurred, dim, noisy, a side cut off, and three of them mirrored.
VARIANTS: dict[str, Variant] = {
    "mirror": Variant(mirrored=True), "half": Variant(scale=0.5),
    "mirror_half": Variant(mirrored=True, scale=0.5),
    "three_quarter": Variant(scale=0.75), "blur": Variant(blur=2.0),
    "dim": Variant(gain=0.4), "noisy": Variant(noise=12.0), "cropped": Variant(crop=0.15),
    "mirror_three_quarter": Variant(mirrored=True, scale=0.75),
    "mirror_blur": Variant(mirrored=True, blur=2.0), "mirror_dim": Variant(mirrored=True, gain=0.4),
}
#: A variant's person matches an original person when their mean joint distance, in the
#: original's pixels, is under this share of the original person's height.
MATCH_SHARE = 0.15


def _write_variant(video: Path, out: Path, variant: Variant) -> None:
    """Writes ``video``'s frames as ``variant`` to ``out`` (MJPEG q95, same rate)."""
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 60.0
    writer: cv2.VideoWriter | None = None
    tmp = out.with_suffix(".part.avi")
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frame = variant.make(frame, index)
            index += 1
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


def _width(video: Path) -> int:
    """The frame width (px) of ``video``."""
    cap = cv2.VideoCapture(str(video))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
        cap.release()


def variant_jsonls(name: str, cache: Path = CACHE) -> list[Path]:
    """Each view's ``annotations.jsonl`` of one variant (made once, then cached)."""
    variant = VARIANTS[name]
    sc = scene("multi", cache)
    manifest = sha256_file(Path(__file__).resolve().parents[1] / "models" / "manifest.json")
    out = []
    for i, video in enumerate(sc.videos):
        device = f"cam{i + 1:02d}"
        folder = cache / "build" / "fuse" / f"multi_{name}" / device
        key = json.dumps({"video": sha256_file(video), "manifest": manifest,
                          "variant": asdict(variant), **RUN_SETTINGS}, sort_keys=True)
        stamp, jsonl = folder / "key.json", folder / "annotations.jsonl"
        if not (stamp.is_file() and stamp.read_text(encoding="utf-8") == key and jsonl.is_file()):
            folder.mkdir(parents=True, exist_ok=True)
            stamp.unlink(missing_ok=True)
            src = folder / "source.avi"
            _write_variant(video, src, variant)
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
    variant = VARIANTS[name]
    dev = multi_tracks(cache / "lifter")
    rows: dict[str, list[Any]] = {k: [] for k in ("kp", "conf", "gt", "view", "frame", "track")}
    widths = [_width(video) for video in scene("multi", cache).videos]
    for v, jsonl in enumerate(variant_jsonls(name, cache)):
        for vf in read_view_frames(jsonl):
            orig = np.flatnonzero((dev["view"] == v) & (dev["frame"] == vf.frame_id))
            for person in vf.persons:
                kp = variant.to_original(person.kp, vf.size, widths[v])
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
                if variant.mirrored:
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
    """Prints the development figures of no guard, the 2D alone and the default on each set.

    The sets: the original views and every variant; then each guard's ``beyond`` figures
    (:func:`lifter.sides_dev.evaluate`) summed over all of them.
    """
    from edge.bench.lift import multi_tracks
    from edge.lift3d import LeftRight, Lifter
    from lifter.sides_dev import evaluate

    logging.basicConfig(level=logging.INFO)
    lifter = Lifter.load("lifter_single_int8", 1)
    sets = {"original": multi_tracks(), **{name: variant_tracks(name) for name in VARIANTS}}
    totals: dict[str, dict[str, int]] = {}
    for name, d in sets.items():
        for guard, make, use_3d in (("none", None, False), ("2D only", LeftRight, False),
                                    ("default", LeftRight, True)):
            fig = evaluate(make, lifter, use_3d=use_3d, dev=d)
            print(name, f"{len(d['kp'])} rows", guard, fig, flush=True)
            total = totals.setdefault(guard, {})
            for key, value in fig["beyond"].items():
                total[key] = total.get(key, 0) + value
    for guard, total in totals.items():
        print("all sets", guard, total)


if __name__ == "__main__":
    main()
