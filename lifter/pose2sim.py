"""Held-out real people: the Pose2Sim demo, 4 calibrated synchronised views of one person.

The ground truth is the 3D pose triangulated from the landmark model's 2D landmarks in all four
views (linear DLT, visibility-weighted, views below 0.5 visibility left out); the lifter and the
landmark model's world landmarks are each scored on every single view against it. The
triangulation uses the same BlazePose 2D landmarks, so the ground truth shares their definition
of a joint (e.g. where the hip is), not their depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.fuse.calib import CameraModel, read_calibration
from edge.fuse.triangulate import triangulate as fuse_triangulate
from lifter.real import HELDOUT_VIDEOS, SOURCES_DIR, RealSet, extract
from models import sources

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

CALIB = SOURCES_DIR / sources.POSE2SIM_CALIB.path

#: One calibrated camera (edge/fuse/calib.py holds the model and the Qualisys reader).
Camera = CameraModel


def read_qca(path: Path = CALIB) -> list[Camera]:
    """Reads the Qualisys calibration (cameras in file order, cam01..cam04)."""
    return list(read_calibration(path))


def triangulate(cams: list[Camera], kp: F64, conf: F64, min_conf: float = 0.5) -> F64:
    """Linear (DLT) triangulation of joints seen in several views (edge/fuse/triangulate.py).

    Args:
        cams: V cameras.
        kp: (V, n, J, 2) pixels (distorted, as the views see them).
        conf: (V, n, J) visibility, used as weights; below ``min_conf`` a view is left out.
        min_conf: Weight threshold.

    Returns:
        (n, J, 3) world metres; NaN where fewer than two views see the joint.
    """
    _, n, j = conf.shape
    proj = np.stack([c.projection for c in cams])
    und = np.stack([c.undistort(kp[i]) for i, c in enumerate(cams)])
    w = np.where(conf >= min_conf, conf, 0.0)
    return np.stack([fuse_triangulate(proj, und[:, a], w[:, a]) for a in range(n)]).reshape(
        n, j, 3)


def look_at_rotation(ray: F64) -> F64:
    """(n, 3) rays in camera coordinates -> (n, 3, 3) rotations taking each ray to +z.

    The smallest rotation, so the look-at frame's x and y stay close to the image's.
    """
    z = ray / np.linalg.norm(ray, axis=-1, keepdims=True)
    target = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, target)
    s = np.linalg.norm(axis, axis=-1)
    c = z @ target
    k = axis / np.maximum(s, 1e-12)[:, None]
    kx = np.zeros((len(z), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx = kx - kx.transpose(0, 2, 1)
    ang = np.arctan2(s, c)
    eye = np.eye(3)[None]
    return np.asarray(eye + np.sin(ang)[:, None, None] * kx
                      + (1 - np.cos(ang))[:, None, None] * kx @ kx)


@dataclass(frozen=True)
class Pose2SimEval:
    """Single-view inputs with multi-view ground truth.

    Attributes:
        kp: (n, 17, 2) pixels of one view.
        conf: (n, 17) visibility.
        world: (n, 17, 3) metres, the landmark model's world landmarks (re-rooted).
        gt: (n, 17, 3) metres, triangulated, root-relative, in that view's look-at frame.
        seq: (n,) view index (frames of a view contiguous, in time order).
        reproj_px: Median reprojection error of the triangulation, pixels.
        frame: (n,) frame index in the view's video (0 first).
    """

    kp: F32
    conf: F32
    world: F32
    gt: F32
    seq: npt.NDArray[np.intp]
    reproj_px: float
    frame: npt.NDArray[np.intp]


def view_frames(cams: list[Camera], x3: F64) -> F64:
    """World joints -> each camera's look-at frame, root-relative (the lifter's output frame).

    Args:
        cams: V cameras.
        x3: (n, 17, 3) COCO-17 world metres (NaN propagates to its pose).

    Returns:
        (V, n, 17, 3) metres: per camera, the pose minus its mid-hip, rotated so the ray to
        the mid-hip is +z (:func:`look_at_rotation`).
    """
    out = []
    for cam in cams:
        xc = x3 @ cam.r.T + cam.t
        root = 0.5 * (xc[:, 11] + xc[:, 12])
        with np.errstate(invalid="ignore"):
            rot = look_at_rotation(root)
        out.append(np.einsum("nij,nkj->nki", rot, xc - root[:, None]))
    return np.stack(out) if out else np.zeros((0, *x3.shape))


def reference_in_views(cams: list[Camera], ref_frames: npt.ArrayLike, ref_joints: F64,
                       view: npt.ArrayLike, frame: npt.ArrayLike) -> F64:
    """A world-frame 3D reference, as the truth of single-view rows (:func:`view_frames`).

    Args:
        cams: The V cameras, in view order.
        ref_frames: (m,) frame index of each reference pose.
        ref_joints: (m, 17, 3) world metres (e.g. :func:`bench.fuse_data.fused_reference`).
        view: (n,) view index of each row.
        frame: (n,) frame index of each row.

    Returns:
        (n, 17, 3) metres in each row's view's look-at frame, root-relative; NaN where the
        reference lacks the row's frame or a joint.
    """
    per = view_frames(cams, np.asarray(ref_joints, np.float64))
    pos = {int(f): i for i, f in enumerate(np.asarray(ref_frames).tolist())}
    out = np.full((len(np.asarray(view)), 17, 3), np.nan)
    for r, (v, f) in enumerate(zip(np.asarray(view).tolist(), np.asarray(frame).tolist(),
                                   strict=True)):
        i = pos.get(int(f))
        if i is not None:
            out[r] = per[int(v), i]
    return out


def build(real: RealSet | None = None) -> Pose2SimEval:
    """Runs the 2D model on the 4 views (unless given) and triangulates the ground truth."""
    real = real if real is not None else extract(HELDOUT_VIDEOS, max_people=1)
    cams = read_qca()
    frames = sorted(set(real.frame.tolist()))
    common = [f for f in frames if all(
        np.any((real.video == v) & (real.frame == f)) for v in range(4))]
    idx = np.array([[int(np.flatnonzero((real.video == v) & (real.frame == f))[0])
                     for f in common] for v in range(4)])
    kp = real.kp[idx].astype(np.float64)
    conf = real.conf[idx].astype(np.float64)
    x3 = triangulate(cams, kp, conf)
    reproj = np.stack([c.project(x3) for c in cams])
    err = np.linalg.norm(reproj - kp, axis=-1)[conf > 0.5]
    ok = np.all(np.isfinite(x3), axis=(1, 2))
    gts = view_frames(cams, x3[ok])
    kps, cfs, wds, seqs, fis = [], [], [], [], []
    for v in range(len(cams)):
        kps.append(real.kp[idx[v][ok]])
        cfs.append(real.conf[idx[v][ok]])
        wds.append(real.world[idx[v][ok]])
        seqs.append(np.full(int(ok.sum()), v))
        fis.append(np.asarray(common, np.intp)[ok])
    return Pose2SimEval(np.concatenate(kps).astype(np.float32),
                        np.concatenate(cfs).astype(np.float32),
                        np.concatenate(wds).astype(np.float32),
                        np.concatenate(list(gts)).astype(np.float32), np.concatenate(seqs),
                        float(np.median(err[np.isfinite(err)])), np.concatenate(fis))
