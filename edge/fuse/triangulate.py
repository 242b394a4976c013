"""Multi-view geometry of fusion: weighted DLT, reprojection, epipolar distances.

Pure numpy: no I/O, no state. Points are undistorted pixels (``CameraModel.undistort``), so
the cameras are the (3, 4) projection matrices ``K [R | t]``.

Written by hand: OpenCV's ``triangulatePoints`` takes exactly two views and no weights, and
no well-kept library does a confidence-weighted N-view DLT over a batch of joints.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def triangulate(proj: F64, x: F64, w: F64) -> F64:
    """Confidence-weighted linear (DLT) triangulation of J points seen in V views.

    Each view adds two rows ``w (u p3 - p1)``, ``w (v p3 - p2)``; the point is the right
    singular vector of the smallest singular value (Hartley & Zisserman, 12.2). Pixel
    coordinates are centred and scaled per view first, so the rows of every view weigh alike.

    Args:
        proj: (V, 3, 4) projection matrices, undistorted px.
        x: (V, J, 2) undistorted px (NaN allowed where ``w`` is 0).
        w: (V, J) weights >= 0; 0 leaves a view out for that point.

    Returns:
        (J, 3) world points (the calibration's units); NaN where fewer than two views have a
        weight > 0, or where the point is at infinity.
    """
    v, j = w.shape
    # Conditioning: u' = (u - c) / s with c, s of a typical image, applied to P as T P.
    c = np.array([1000.0, 1000.0])
    s = 1000.0
    t = np.array([[1.0 / s, 0.0, -c[0] / s], [0.0, 1.0 / s, -c[1] / s], [0.0, 0.0, 1.0]])
    p = t @ proj  # (V, 3, 4)
    xn = (np.nan_to_num(x) - c) / s  # (V, J, 2)
    ww = np.where(np.isfinite(x).all(-1), w, 0.0)
    a = np.empty((j, 2 * v, 4))
    a[:, 0::2] = (xn[..., 0, None] * p[:, None, 2] - p[:, None, 0]).transpose(1, 0, 2)
    a[:, 1::2] = (xn[..., 1, None] * p[:, None, 2] - p[:, None, 1]).transpose(1, 0, 2)
    a[:, 0::2] *= ww.T[..., None]
    a[:, 1::2] *= ww.T[..., None]
    _, _, vt = np.linalg.svd(a)
    h = vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = h[:, :3] / h[:, 3:4]
    enough = (ww > 0).sum(0) >= 2
    out[~enough | (np.abs(h[:, 3]) < 1e-12)] = np.nan
    return np.asarray(out)


def project(proj: F64, xw: F64) -> F64:
    """(V, 3, 4) projections of (J, 3) points -> (V, J, 2) undistorted px (NaN behind)."""
    h = np.einsum("vij,nj->vni", proj[:, :, :3], xw) + proj[:, None, :, 3]
    z = h[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(h[..., :2] / np.where(z > 1e-9, z, np.nan))


def reprojection_error(proj: F64, x: F64, xw: F64) -> F64:
    """(V, J) px distance between observed ``x`` (V, J, 2) and the projected (J, 3) points."""
    return np.asarray(np.linalg.norm(project(proj, xw) - x, axis=-1))


def skew(v: F64) -> F64:
    """(3,) -> (3, 3) cross-product matrix."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def fundamental(k_a: F64, r_a: F64, t_a: F64, k_b: F64, r_b: F64, t_b: F64) -> F64:
    """Fundamental matrix F with ``x_b^T F x_a = 0`` for undistorted px of cameras a, b."""
    r = r_b @ r_a.T
    t = t_b - r @ t_a
    return np.asarray(np.linalg.inv(k_b).T @ skew(t) @ r @ np.linalg.inv(k_a))


def epipolar_distance(f: F64, xa: F64, xb: F64) -> F64:
    """Symmetric point-to-epipolar-line distance, px.

    Args:
        f: (3, 3) fundamental matrix of (a, b).
        xa: (..., 2) px in view a.
        xb: (..., 2) px in view b (same shape).

    Returns:
        (...) mean of the distance of ``xb`` to the line of ``xa`` and of ``xa`` to the line
        of ``xb``.
    """
    ha = np.concatenate([xa, np.ones((*xa.shape[:-1], 1))], -1)
    hb = np.concatenate([xb, np.ones((*xb.shape[:-1], 1))], -1)
    lb = ha @ f.T  # lines in b
    la = hb @ f  # lines in a
    num = np.abs(np.sum(hb * lb, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        db = num / np.linalg.norm(lb[..., :2], axis=-1)
        da = num / np.linalg.norm(la[..., :2], axis=-1)
    return np.asarray(0.5 * (da + db))
