"""Held-out real people: the Pose2Sim demo, 4 calibrated synchronised views of one person.

The ground truth is the 3D pose triangulated from the landmark model's 2D landmarks in all four
views (linear DLT, visibility-weighted, views below 0.5 visibility left out); the lifter and the
landmark model's world landmarks are each scored on every single view against it. The
triangulation uses the same BlazePose 2D landmarks, so the ground truth shares their definition
of a joint (e.g. where the hip is), not their depth.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lifter.real import HELDOUT_VIDEOS, SOURCES_DIR, RealSet, extract
from models import sources

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

CALIB = SOURCES_DIR / sources.POSE2SIM_CALIB.path
#: Qualisys stores intrinsics in sub-pixel units of 1/64 pixel.
QCA_SUBPIXEL = 64.0


@dataclass(frozen=True)
class Camera:
    """A pinhole camera (distortion ignored: k1 is -0.05 over a 9 mm lens).

    Attributes:
        k: (3, 3) intrinsics, pixels.
        r: (3, 3) world -> camera rotation (camera x right, y down, z forward).
        t: (3,) world -> camera translation, metres.
    """

    k: F64
    r: F64
    t: F64

    def project(self, x: F64) -> F64:
        """(..., 3) world metres -> (..., 2) pixels."""
        c = x @ self.r.T + self.t
        p = c @ self.k.T
        return np.asarray(p[..., :2] / p[..., 2:3])


def read_qca(path: Path = CALIB) -> list[Camera]:
    """Reads the Qualisys calibration (cameras in file order, cam01..cam04)."""
    root = ET.parse(path).getroot()
    cams = []
    for cam in root.iter("camera"):
        tr = cam.find("transform")
        it = cam.find("intrinsic")
        fov = cam.find("fov_video")
        assert tr is not None and it is not None and fov is not None
        m = np.array([[float(tr.get(f"r{i}{j}", "0")) for j in (1, 2, 3)] for i in (1, 2, 3)])
        pos = np.array([float(tr.get(a, "0")) for a in "xyz"]) / 1000.0
        # Rows of the file's matrix are world -> Qualisys camera, whose camera looks along -z
        # with y up; flipping y and z gives the OpenCV camera (checked: 15 px median
        # reprojection error against 95-370 px for the other readings).
        r = np.diag([1.0, -1.0, -1.0]) @ m
        fu = float(it.get("focalLengthU", "0")) / QCA_SUBPIXEL
        fv = float(it.get("focalLengthV", "0")) / QCA_SUBPIXEL
        cu = float(it.get("centerPointU", "0")) / QCA_SUBPIXEL - float(fov.get("left", "0"))
        cv = float(it.get("centerPointV", "0")) / QCA_SUBPIXEL - float(fov.get("top", "0"))
        k = np.array([[fu, 0, cu], [0, fv, cv], [0, 0, 1]])
        cams.append(Camera(k, r, -r @ pos))
    return cams


def triangulate(cams: list[Camera], kp: F64, conf: F64, min_conf: float = 0.5) -> F64:
    """Linear (DLT) triangulation of joints seen in several views.

    Args:
        cams: V cameras.
        kp: (V, n, J, 2) pixels.
        conf: (V, n, J) visibility, used as weights; below ``min_conf`` a view is left out.
        min_conf: Weight threshold.

    Returns:
        (n, J, 3) world metres; NaN where fewer than two views see the joint.
    """
    v, n, j = conf.shape
    out = np.full((n, j, 3), np.nan)
    proj = [c.k @ np.concatenate([c.r, c.t[:, None]], 1) for c in cams]
    for a in range(n):
        for b in range(j):
            rows = []
            for c in range(v):
                w = conf[c, a, b]
                if w < min_conf:
                    continue
                x, y = kp[c, a, b]
                p = proj[c]
                rows.append(w * (x * p[2] - p[0]))
                rows.append(w * (y * p[2] - p[1]))
            if len(rows) < 4:
                continue
            _, _, vt = np.linalg.svd(np.asarray(rows))
            out[a, b] = vt[-1, :3] / vt[-1, 3]
    return out


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
    """

    kp: F32
    conf: F32
    world: F32
    gt: F32
    seq: npt.NDArray[np.intp]
    reproj_px: float


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
    kps, cfs, wds, gts, seqs = [], [], [], [], []
    for v, cam in enumerate(cams):
        xc = x3[ok] @ cam.r.T + cam.t
        root = 0.5 * (xc[:, 11] + xc[:, 12])
        rot = look_at_rotation(root)
        gts.append(np.einsum("nij,nkj->nki", rot, xc - root[:, None]))
        kps.append(real.kp[idx[v][ok]])
        cfs.append(real.conf[idx[v][ok]])
        wds.append(real.world[idx[v][ok]])
        seqs.append(np.full(int(ok.sum()), v))
    return Pose2SimEval(np.concatenate(kps).astype(np.float32),
                        np.concatenate(cfs).astype(np.float32),
                        np.concatenate(wds).astype(np.float32),
                        np.concatenate(gts).astype(np.float32), np.concatenate(seqs),
                        float(np.median(err[np.isfinite(err)])))
