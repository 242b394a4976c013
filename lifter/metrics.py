"""Pose error metrics, in millimetres."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def mpjpe(pred: npt.ArrayLike, gt: npt.ArrayLike) -> float:
    """Mean per-joint position error (mm) of (n, J, 3) metre poses, both root-relative."""
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    return float(np.linalg.norm(p - g, axis=-1).mean() * 1000)


def procrustes_align(pred: npt.ArrayLike, gt: npt.ArrayLike) -> F64:
    """Aligns each predicted pose to its ground truth by a similarity transform.

    Args:
        pred: (n, J, 3) metres.
        gt: (n, J, 3) metres.

    Returns:
        (n, J, 3) metres, the prediction after the best rotation, uniform scale and translation
        (Umeyama / orthogonal Procrustes with reflections excluded).
    """
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    mp, mg = p.mean(1, keepdims=True), g.mean(1, keepdims=True)
    p0, g0 = p - mp, g - mg
    h = np.einsum("nji,njk->nik", p0, g0)
    u, s, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("nij,njk->nik", u, vt)))
    s[:, -1] *= d
    u[:, :, -1] *= d[:, None]
    r = np.einsum("nij,njk->nik", u, vt)
    scale = s.sum(1) / np.maximum((p0 ** 2).sum((1, 2)), 1e-12)
    return np.asarray(scale[:, None, None] * np.einsum("nji,nik->njk", p0, r) + mg)


def pa_mpjpe(pred: npt.ArrayLike, gt: npt.ArrayLike) -> float:
    """MPJPE (mm) after Procrustes alignment of each pose (rotation, scale, translation)."""
    return mpjpe(procrustes_align(pred, gt), gt)


def accel_error(pred: npt.ArrayLike, gt: npt.ArrayLike, seq: npt.ArrayLike) -> float:
    """Jitter: mean per-joint error of the second difference (mm / frame^2) within sequences.

    Args:
        pred: (n, J, 3) metres, frames of several sequences in time order.
        gt: (n, J, 3) metres.
        seq: (n,) sequence id of each frame (frames of a sequence contiguous).
    """
    p, g, s = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(seq)
    ok = (s[2:] == s[1:-1]) & (s[1:-1] == s[:-2])
    ap = p[2:] - 2 * p[1:-1] + p[:-2]
    ag = g[2:] - 2 * g[1:-1] + g[:-2]
    return float(np.linalg.norm(ap - ag, axis=-1)[ok].mean() * 1000)
