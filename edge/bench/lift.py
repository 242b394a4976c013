"""3D accuracy and stability of every 3D source, side by side (``edge-bench --lift``).

Sources: the landmark model's world landmarks and every lifter in the manifest, each lifter
alone, ``+limbs`` (limb lengths steadied per track, no prior) and ``+sides+limbs`` (the 3D stage
as shipped: the 2D model's left/right label flips undone per track by
:class:`edge.lift3d.LeftRight`, limbs steadied with the short-track prior). The test views are
run as two 30 fps tracks per view (every other frame, what a 30 fps device sees); an extra row,
``+sides+limbs@60fps``, runs the shipped stage on one 60 fps track per view, and on the
development set's tracks with the guard told their true rate (60 fps; the other rows' guard
takes them as 30 fps, as before); its demo-clip columns (a 30 fps clip) are the 30 fps row's.

* **Accuracy** on Pose2Sim ``Demo_SinglePerson`` (the test set: 4 calibrated views of one
  person, 100 frames each at 60 fps), against the 3D pose triangulated from all four views
  (:func:`lifter.pose2sim.build`), each view scored alone: PA-MPJPE; MPJPE after root alignment
  in the camera's frame (the lifter's look-at frame differs from the camera's by a rotation
  shared by prediction and truth, which leaves distances unchanged); and the count of frames
  whose left and right limbs are swapped relative to the truth (:func:`swapped`). The same
  scores against a second reference, the multi-view fusion's 3D of the same frames
  (:func:`bench.fuse_data.fused_reference`: edge-pose's own 2D in the four views, fused by
  ``edge-pose fuse``'s triangulation; :func:`fused_truth`), moved into each view's frame the
  same way (:func:`lifter.pose2sim.view_frames`).
* **Development set** (:func:`multi_tracks`): Pose2Sim ``Demo_MultiPerson``'s 4 views as
  edge-pose tracks them (left/right guard off), scored against the fused 3D of the four views:
  the same scores. The runtime guards are chosen on it and on the demo clip.
* **Stability** on the demo clip (``edge/assets/sports2d_demo.mp4``, 2 people): limb-length
  coefficient of variation per track and joint-angle jitter (elbows and knees, deg/frame,
  median).
* **Cost**: lifts per second at 1 thread, one person per call.

The 2D landmarks come from the float detector and landmark model (:func:`lifter.real.extract`),
cached in ``cache/lifter/`` after the first run. Usage::

    .venv/bin/python -m edge.bench.lift [--json out/lift.json] [--markdown out/lift.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.config import Config
from edge.lift3d import (
    COCO17_FLIP,
    LIMB_PRIOR_FRAMES,
    LeftRight,
    Lifter,
    LimbLengths,
    TemporalLifter,
    WorldLandmarkLifter,
    lift_both_sides,
    paired_sides,
)
from edge.runtime import Manifest, ModelError, load_manifest

logger = logging.getLogger("edge.bench.lift")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE = ROOT / "cache" / "lifter"
#: Limbs whose length should not change: upper arms, forearms, thighs, shanks (COCO-17).
LIMBS: tuple[tuple[int, int], ...] = ((5, 7), (7, 9), (6, 8), (8, 10),
                                      (11, 13), (13, 15), (12, 14), (14, 16))
#: Joint angles (parent, joint, child): elbows and knees.
ANGLES: tuple[tuple[int, int, int], ...] = ((5, 7, 9), (6, 8, 10), (11, 13, 15), (12, 14, 16))
#: Elbows + wrists and knees + ankles, left then right.
_ARMS = ((7, 9), (8, 10))
_LEGS = ((13, 15), (14, 16))
#: Tracks shorter than this (tracker fragments) are left out of the limb-length figures.
MIN_TRACK_FRAMES = 10
#: Suffix of the sources run on 60 fps tracks (the others: the test views as 30 fps tracks).
AT_60FPS = "@60fps"
#: A limb pair counts as swapped when exchanging its sides lowers its error by this much (m).
SWAP_MARGIN_M = 0.05

Lift = Callable[["ViewSet"], F32]


class ViewSet:
    """The test views: (n, 17, 2) pixels, (n, 17) visibility, world landmarks, truth, view, frame.

    Rows of a view are contiguous and in time order; ``frame`` is each row's frame index in its
    view's video.
    """

    def __init__(self, kp: F32, conf: F32, world: F32, gt: F32, view: npt.NDArray[np.intp],
                 reproj_px: float, frame: npt.NDArray[np.intp]) -> None:
        self.kp, self.conf, self.world, self.gt, self.view = kp, conf, world, gt, view
        self.reproj_px = reproj_px
        self.frame = frame

    @classmethod
    def load(cls, cache: Path = CACHE) -> ViewSet:
        """From ``cache/pose2sim_single.npz``, built (2D model on 4 videos) when absent.

        A file from before the frame indices is built again (the same 2D and truth, plus
        ``frame``).
        """
        path = cache / "pose2sim_single.npz"
        if path.is_file():
            with np.load(path) as z:
                stale = "frame" not in z.files
            if stale:
                logger.info("%s has no frame indices: building it again", path)
        if not path.is_file() or stale:
            from lifter import pose2sim
            from lifter.real import fetch_sources

            fetch_sources(cache.parent)
            ev = pose2sim.build()
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, kp=ev.kp, conf=ev.conf, world=ev.world, gt=ev.gt,
                                view=ev.seq, reproj_px=np.float64(ev.reproj_px),
                                frame=ev.frame)
        with np.load(path) as z:
            return cls(z["kp"], z["conf"], z["world"], z["gt"], z["view"], float(z["reproj_px"]),
                       z["frame"])


def fused_truth(ts: ViewSet) -> F64:
    """The second reference: the fused multi-view 3D of the test views' frames.

    :func:`bench.fuse_data.fused_reference` (edge-pose on the four views of Demo_SinglePerson,
    fused; cached under ``cache/build/fuse``), moved into each row's view's look-at frame,
    root-relative, as the first reference (:func:`lifter.pose2sim.reference_in_views`).

    Returns:
        (n, 17, 3) metres per row of ``ts``; NaN rows where the fusion has no complete pose.
    """
    from bench.fuse_data import fused_reference, scene
    from lifter.pose2sim import read_qca, reference_in_views

    frames, joints = fused_reference("single")
    cams = read_qca(scene("single").calib)
    return reference_in_views(cams, frames, joints, ts.view, ts.frame)


def demo_tracks(cache: Path = CACHE) -> dict[str, Any]:
    """The demo clip's person-frames (kp, conf, world, track, frame), cached."""
    path = cache / "sports2d_demo.npz"
    if not path.is_file():
        from lifter.real import TRAIN_VIDEOS, extract

        s = extract(TRAIN_VIDEOS, max_people=2)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, kp=s.kp, conf=s.conf, world=s.world, track=s.track,
                            frame=s.frame)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def multi_tracks(cache: Path = CACHE) -> dict[str, Any]:
    """The development set: Demo_MultiPerson's 4 views, tracked, with the fused 3D as truth.

    edge-pose's own per-view runs (int8 models, its tracker, left/right guard off:
    ``bench.fuse_data.scene``, cached under ``cache/build/fuse``) give each view's 2D people and
    their track IDs; ``edge-pose fuse`` of
    the four views gives each person's 3D, and the 2D people it was fused from. Each 2D person
    fused into a 3D person becomes a row, with that 3D moved into its view's look-at frame,
    root-relative (:func:`lifter.pose2sim.reference_in_views`). The fusion takes each joint from
    several views, so one view's label flip rarely reaches it (a few frames do: the truth is
    not perfect). Never the test set (Demo_SinglePerson): the runtime guards
    (:class:`edge.lift3d.LeftRight`, :class:`edge.lift3d.LimbLengths`) are chosen on this and
    the demo clip. Cached in ``cache/lifter/multi_tracks.npz``.

    Returns:
        ``kp`` (n, 17, 2) px, ``conf`` (n, 17), ``gt`` (n, 17, 3) metres (NaN: joint not
        triangulated), ``view`` (n,) 0..3, ``frame`` (n,), ``track`` (n,) ``view * 1000 +
        track ID``; rows of a track contiguous and in time order.
    """
    path = cache / "multi_tracks.npz"
    if not path.is_file():
        from bench.fuse_data import scene
        from edge.fuse.calib import read_calibration
        from edge.fuse.fuser import FuseSettings
        from edge.fuse.offline import fuse_jsonl, read_view_frames
        from lifter.pose2sim import read_qca, reference_in_views

        sc = scene("multi", cache.parent)
        jsonls, calib_path = sc.jsonl, sc.calib
        calib = read_calibration(calib_path)
        devices = {f"cam{i + 1:02d}": cam for i, cam in enumerate(calib.cameras)}
        fused: dict[tuple[str, int, int], F64] = {}
        for ff in fuse_jsonl(jsonls, calib, devices, FuseSettings(smoothing=False,
                                                                  limb_window=0)):
            for p in ff.persons:
                for dev, fid, pid in p.sources:
                    fused[(dev, fid, pid)] = p.joints
        cams = read_qca(calib_path)
        rows: dict[str, list[Any]] = {k: [] for k in ("kp", "conf", "gt", "view", "frame",
                                                      "track")}
        for v, jsonl in enumerate(jsonls):
            dev = f"cam{v + 1:02d}"
            for vf in read_view_frames(jsonl):
                for person in vf.persons:
                    hit = fused.get((dev, vf.frame_id, person.id))
                    if hit is None:
                        continue
                    rows["gt"].append(reference_in_views(cams, [vf.frame_id], hit[None], [v],
                                                         [vf.frame_id])[0])
                    rows["kp"].append(person.kp)
                    rows["conf"].append(person.conf)
                    rows["view"].append(v)
                    rows["frame"].append(vf.frame_id)
                    rows["track"].append(v * 1000 + person.id)
        arr = {k: np.asarray(x) for k, x in rows.items()}
        order = np.lexsort((arr["frame"], arr["track"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, kp=arr["kp"][order], conf=arr["conf"][order],
                            gt=arr["gt"][order], view=arr["view"][order],
                            frame=arr["frame"][order], track=arr["track"][order])
    with np.load(path) as z:
        return {k: z[k] for k in z.files}

def swapped(pred: npt.ArrayLike, gt: npt.ArrayLike, margin: float = SWAP_MARGIN_M
            ) -> npt.NDArray[np.bool_]:
    """Frames whose left and right arms or legs are swapped relative to the truth.

    Both poses root-relative in the same frame. For the arms (elbows, wrists) and the legs
    (knees, ankles) apart, the mean joint error of the prediction is compared with that of the
    prediction with its left and right exchanged; a frame is swapped when, for either, the
    exchanged labelling is closer by more than ``margin``.

    Args:
        pred: (n, 17, 3) metres.
        gt: (n, 17, 3) metres.
        margin: Metres.

    Returns:
        (n,) bool.
    """
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    out = np.zeros(len(p), bool)
    for left, right in (_ARMS, _LEGS):
        ix = list(left) + list(right)
        sw = list(right) + list(left)
        e = np.linalg.norm(p[:, ix] - g[:, ix], axis=-1).mean(1)
        es = np.linalg.norm(p[:, sw] - g[:, ix], axis=-1).mean(1)
        out |= es < e - margin
    return out


def limb_cv(joints: npt.ArrayLike, track: npt.ArrayLike,
            min_frames: int = MIN_TRACK_FRAMES) -> dict[int, float]:
    """Limb-length coefficient of variation (%) of each track, mean over the 8 limbs.

    Args:
        joints: (n, 17, 3) metres.
        track: (n,) track id.
        min_frames: Shorter tracks are left out.
    """
    j, t = np.asarray(joints, np.float64), np.asarray(track)
    out = {}
    for tid in np.unique(t):
        sel = j[t == tid]
        if len(sel) < max(min_frames, 2):
            continue
        lengths = np.stack([np.linalg.norm(sel[:, a] - sel[:, b], axis=-1) for a, b in LIMBS])
        out[int(tid)] = float(np.mean(lengths.std(1) / np.maximum(lengths.mean(1), 1e-9)) * 100)
    return out


def joint_angles(joints: npt.ArrayLike) -> F64:
    """(n, 17, 3) metres -> (n, 4) elbow and knee angles, degrees."""
    j = np.asarray(joints, np.float64)
    out = []
    for a, b, c in ANGLES:
        u, v = j[:, a] - j[:, b], j[:, c] - j[:, b]
        cos = (u * v).sum(-1) / np.maximum(
            np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-12)
        out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.stack(out, 1)


def angle_jitter(joints: npt.ArrayLike, track: npt.ArrayLike, frame: npt.ArrayLike) -> float:
    """Median absolute frame-to-frame change of the elbow and knee angles (deg/frame).

    Only pairs of consecutive frames of one track count.
    """
    t, f = np.asarray(track), np.asarray(frame)
    ang = joint_angles(joints)
    ok = (t[1:] == t[:-1]) & (f[1:] == f[:-1] + 1)
    d = np.abs(np.diff(ang, axis=0))[ok]
    return float(np.median(d)) if d.size else float("nan")


class _DevViews:
    """The ``view`` and ``gt`` of the development set, as :func:`accuracy` reads them."""

    def __init__(self, view: npt.NDArray[np.intp]) -> None:
        self.view = view
        self.gt = np.zeros((len(view), 17, 3))


def accuracy(pred: npt.ArrayLike, ts: ViewSet | _DevViews, gt: npt.ArrayLike | None = None
             ) -> dict[str, Any]:
    """Per-view and mean PA-MPJPE, MPJPE (mm) and swapped-frame counts.

    Args:
        pred: (n, 17, 3) metres, root-relative, per row of ``ts``.
        ts: The test views.
        gt: (n, 17, 3) metres, the reference (default ``ts.gt``); rows with a NaN are left out.
    """
    from lifter.metrics import mpjpe, pa_mpjpe

    p = np.asarray(pred, np.float64)
    g = np.asarray(ts.gt if gt is None else gt, np.float64)
    ok = np.isfinite(g).all(axis=(1, 2))
    views = []
    for v in np.unique(ts.view):
        s = (ts.view == v) & ok
        views.append({"view": int(v) + 1, "frames": int(s.sum()),
                      "pa_mpjpe_mm": round(pa_mpjpe(p[s], g[s]), 1),
                      "mpjpe_mm": round(mpjpe(p[s], g[s]), 1),
                      "swapped_frames": int(swapped(p[s], g[s]).sum())})
    return {"views": views,
            "mean": {k: round(float(np.mean([x[k] for x in views])), 1)
                     for k in ("pa_mpjpe_mm", "mpjpe_mm")},
            "worst_pa_mpjpe_mm": max(x["pa_mpjpe_mm"] for x in views),
            "swapped_frames": sum(x["swapped_frames"] for x in views)}


def _single(lifter: Lifter) -> Callable[[F32, F32, F32, npt.NDArray[np.intp]], F32]:
    def run(kp: F32, conf: F32, world: F32, track: npt.NDArray[np.intp]) -> F32:
        return np.concatenate([lifter.lift(kp[i:i + 1], conf[i:i + 1]).joints
                               for i in range(len(kp))]) if len(kp) else kp[:, :, :0]
    return run


def _temporal(lifter: TemporalLifter) -> Callable[[F32, F32, F32, npt.NDArray[np.intp]], F32]:
    def run(kp: F32, conf: F32, world: F32, track: npt.NDArray[np.intp]) -> F32:
        lifter.reset()
        out = [lifter.lift(kp[i:i + 1], conf[i:i + 1], [int(track[i])]).joints
               for i in range(len(kp))]
        lifter.reset()
        return np.concatenate(out)
    return run


def _with_limbs(fn: Callable[[F32, F32, F32, npt.NDArray[np.intp]], F32],
                prior_frames: int = 0) -> Callable[[F32, F32, F32, npt.NDArray[np.intp]], F32]:
    """The same source with :class:`edge.lift3d.LimbLengths` (default window) per track."""
    window = Config().models.limb_window

    def run(kp: F32, conf: F32, world: F32, track: npt.NDArray[np.intp]) -> F32:
        joints = fn(kp, conf, world, track)
        limbs = LimbLengths(window, prior_frames)
        valid = np.nan_to_num(conf) >= 0.5
        return np.concatenate([limbs(joints[i:i + 1], [int(track[i])], valid[i:i + 1])
                               for i in range(len(joints))])
    return run


def sides_swapped(kp: F32, conf: F32, track: npt.NDArray[np.intp], fps: float = 30.0,
                  lifter: Lifter | None = None) -> npt.NDArray[np.bool_]:
    """Rows whose left and right :class:`edge.lift3d.LeftRight` exchanges, run per track.

    Args:
        kp: (n, 17, 2) px, rows of a track contiguous and in time order.
        conf: (n, 17).
        track: (n,) track id.
        fps: The tracks' frame rate (Hz): their frames are ``1 / fps`` s apart.
        lifter: Single-frame lifter giving the guard the 3D of both labellings, as the 3D
            stages do (:class:`edge.lift3d.LifterStage`); None: the 2D evidence alone.
    """
    if not len(kp):
        return np.zeros(0, bool)
    guard = LeftRight(fps=fps)
    y = (None if lifter is None else  # batch-independent: the same as lifting frame by frame
         paired_sides(lift_both_sides(lifter, kp, conf)))
    return np.concatenate([guard(kp[i:i + 1], conf[i:i + 1], [int(track[i])],
                                 sides_3d=None if y is None else y[i:i + 1])
                           for i in range(len(kp))])


def _with_sides(fn: Callable[[F32, F32, F32, npt.NDArray[np.intp]], F32], fps: float = 30.0,
                lifter: Lifter | None = None
                ) -> Callable[[F32, F32, F32, npt.NDArray[np.intp]], F32]:
    """The same source fed the 2D with the model's label flips undone (tracks at ``fps``).

    ``lifter``: the guard's 3D evidence, as in the 3D stages.
    """
    flip = list(COCO17_FLIP)

    def run(kp: F32, conf: F32, world: F32, track: npt.NDArray[np.intp]) -> F32:
        sw = sides_swapped(kp, conf, track, fps, lifter)
        kp = np.where(sw[:, None, None], kp[:, flip], kp)
        conf = np.where(sw[:, None], conf[:, flip], conf)
        return fn(kp, conf, world, track)
    return run


def _world(kp: F32, conf: F32, world: F32, track: npt.NDArray[np.intp]) -> F32:
    return WorldLandmarkLifter().lift(world, conf).joints


def lift_sources(manifest: Manifest) -> dict[str, tuple[Any, Lifter | TemporalLifter | None]]:
    """Every 3D source: ``world_landmarks`` and each lifter of the manifest.

    Returns:
        Name -> (callable, lifter or None). The callable takes (kp, conf, world, track), rows
        of a track contiguous and in time order, and returns (n, 17, 3) metres.
    """
    out: dict[str, tuple[Any, Lifter | TemporalLifter | None]] = {
        "world_landmarks": (_world, None)}
    for key, e in sorted(manifest.models.items()):
        if e.role != "lifter":
            continue
        single: Lifter | None
        if e.variant == "temporal":
            t = TemporalLifter.load(key, 1, manifest)
            fn = _temporal(t)
            out[key] = (fn, t)
            single = t.fallback  # the 3D stage's guard gets its 3D from the fallback
        else:
            s = Lifter.load(key, 1, manifest)
            fn = _single(s)
            out[key] = (fn, s)
            single = s
        # before this session's guards, and the 3D stage as shipped (sides, limbs with prior)
        out[key + "+limbs"] = (_with_limbs(fn), None)
        out[key + "+sides+limbs"] = (
            _with_sides(_with_limbs(fn, LIMB_PRIOR_FRAMES), 30.0, single), None)
        # the same at 60 fps: the test views and the development set as 60 fps tracks
        out[key + "+sides+limbs" + AT_60FPS] = (
            _with_sides(_with_limbs(fn, LIMB_PRIOR_FRAMES), 60.0, single), None)
    return out


def lifts_per_second(lifter: Lifter | TemporalLifter, seconds: float = 1.5) -> float:
    """One person per call through the runtime API (normalisation, network, symmetrisation)."""
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 1000, (1, 17, 2)).astype(np.float32)
    conf = rng.uniform(0.4, 1, (1, 17)).astype(np.float32)

    def once() -> None:
        if isinstance(lifter, TemporalLifter):
            lifter.lift(kp, conf, [0])
        else:
            lifter.lift(kp, conf)

    for _ in range(50):
        once()
    rates = []
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            once()
            n += 1
        rates.append(n / (time.perf_counter() - t0))
    return float(np.median(rates))


def run(manifest: Manifest, cache: Path = CACHE, speed_s: float = 1.5) -> dict[str, Any]:
    """Measures every 3D source; returns the JSON-able result."""
    ts = ViewSet.load(cache)
    demo = demo_tracks(cache)
    # the test views at 60 fps: two interleaved 30 fps tracks per view for temporal lifters
    n_view = np.bincount(ts.view)
    pos = np.concatenate([np.arange(c) for c in n_view])
    test_track = ts.view * 2 + pos % 2
    order = np.lexsort((pos, test_track))
    inv = np.argsort(order)
    fused = fused_truth(ts)
    dev = multi_tracks(cache)
    result: dict[str, Any] = {"test_set": "Pose2Sim Demo_SinglePerson, 4 views",
                              "triangulation_reproj_px": round(ts.reproj_px, 1),
                              "fused_reference": {
                                  "what": "edge-pose fuse of the 4 views (bench.fuse_data)",
                                  "rows": int(np.isfinite(fused).all(axis=(1, 2)).sum()),
                                  "of_rows": len(fused),
                                  "first_reference_scored": accuracy(ts.gt, ts, fused)["mean"]},
                              "swap_margin_m": SWAP_MARGIN_M, "sources": {}}
    sources = lift_sources(manifest)
    for name, (fn, obj) in sources.items():
        t0 = time.monotonic()
        if name.endswith(AT_60FPS):  # one 60 fps track per view (its rows are in time order)
            pred = fn(ts.kp, ts.conf, ts.world, ts.view)
        else:
            pred = fn(ts.kp[order], ts.conf[order], ts.world[order], test_track[order])[inv]
        acc = accuracy(pred, ts)
        acc["vs_fused"] = accuracy(pred, ts, fused)
        if obj is not None or name != "world_landmarks":  # the dev set has no world landmarks
            pd = fn(dev["kp"], dev["conf"], np.zeros((len(dev["kp"]), 17, 3), np.float32),
                    dev["track"])
            acc["dev_multiperson"] = accuracy(pd, _DevViews(dev["view"]), dev["gt"])
        # the demo clip is 30 fps: the 60 fps rows show their 30 fps sibling's figures
        demo_fn = sources[name.removesuffix(AT_60FPS)][0]
        dj = demo_fn(demo["kp"], demo["conf"], demo["world"], demo["track"])
        cv = limb_cv(dj, demo["track"])
        entry: dict[str, Any] = {
            **acc, "demo_limb_cv_pct": {str(k): round(v, 2) for k, v in cv.items()},
            "demo_limb_cv_pct_max": round(max(cv.values()), 2) if cv else None,
            "demo_angle_jitter_deg_per_frame": round(
                angle_jitter(dj, demo["track"], demo["frame"]), 2)}
        if obj is not None:
            entry["lifts_per_s_1thread"] = round(lifts_per_second(obj, speed_s))
        entry["eval_s"] = round(time.monotonic() - t0, 1)
        result["sources"][name] = entry
        logger.info("%s: %s", name, {k: entry[k] for k in ("mean", "swapped_frames")})
    return result


def rows(result: dict[str, Any]) -> list[list[str]]:
    """Table rows: one per source (header first)."""
    out = [["3D source", "PA-MPJPE v1/v2/v3/v4 (mean) mm", "MPJPE mean mm", "swapped frames",
            "fused ref: PA-MPJPE v1/v2/v3/v4 (mean) mm", "fused ref: MPJPE mean mm",
            "fused ref: swapped", "dev (MultiPerson): PA-MPJPE v1/v2/v3/v4 (mean) mm",
            "dev: MPJPE mean mm", "dev: swapped", "limb CV % per track", "jitter deg/frame",
            "lifts/s 1 thr"]]

    def scores(a: dict[str, Any] | None) -> list[str]:
        if a is None:
            return ["-", "-", "-"]
        pa = "/".join(f"{v['pa_mpjpe_mm']:.0f}" for v in a["views"])
        return [f"{pa} ({a['mean']['pa_mpjpe_mm']:.1f})", f"{a['mean']['mpjpe_mm']:.1f}",
                "/".join(str(v["swapped_frames"]) for v in a["views"])]

    for name, e in result["sources"].items():
        out.append([name, *scores(e), *scores(e.get("vs_fused")),
                    *scores(e.get("dev_multiperson")),
                    "/".join(f"{v:.1f}" for v in e["demo_limb_cv_pct"].values()),
                    f"{e['demo_angle_jitter_deg_per_frame']:.2f}",
                    str(e.get("lifts_per_s_1thread", "-"))])
    return out


def format_markdown(result: dict[str, Any]) -> str:
    """The lifter section of the edge-bench Markdown report."""
    r = rows(result)
    lines = ["### 3D sources", "",
             f"Test set: {result['test_set']} (truth triangulated, reprojection "
             f"{result['triangulation_reproj_px']} px); limb CV and jitter on the demo clip.",
             *_fused_note(result), "",
             "| " + " | ".join(r[0]) + " |", "|" + "---|" * len(r[0])]
    lines += ["| " + " | ".join(x) + " |" for x in r[1:]]
    return "\n".join(lines) + "\n"


def _fused_note(result: dict[str, Any]) -> list[str]:
    f = result.get("fused_reference")
    if f is None:
        return []
    m = f["first_reference_scored"]
    return [f"Fused reference ({f['what']}): {f['rows']} of {f['of_rows']} rows; the first "
            f"reference scored against it: PA-MPJPE {m['pa_mpjpe_mm']} mm, MPJPE "
            f"{m['mpjpe_mm']} mm."]


def format_table(result: dict[str, Any]) -> str:
    """The console version."""
    r = rows(result)
    widths = [max(len(x[i]) for x in r) for i in range(len(r[0]))]
    return "\n".join(["  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)) for x in r]
                     + _fused_note(result))


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(load_manifest(args.models_dir), args.cache)
    except (ModelError, FileNotFoundError) as e:
        print(f"edge-bench lift: {e}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(format_markdown(result), encoding="utf-8")
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
