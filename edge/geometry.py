"""Geometry and small math shared by the stages: box overlap and the logistic function.

Pure numpy/scipy, no I/O. One implementation of each, used everywhere (detectors, NMS, the
tracker, the landmark decoder, the crowd benchmark).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from edge.types import F32

__all__ = ["box_iou", "sigmoid"]

F64 = npt.NDArray[np.float64]


def sigmoid(x: npt.ArrayLike) -> F32:
    """The logistic function ``1 / (1 + exp(-x))``, elementwise (scipy's ``expit``).

    Args:
        x: Logits, any shape; float64 inside, so very large magnitudes saturate to 0 or 1
            without overflow warnings.

    Returns:
        float32 array of the same shape, in [0, 1].
    """
    y = expit(np.asarray(x, np.float64))
    return np.asarray(y, np.float32)


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike, *,
            over: Literal["union", "smaller", "first"] = "union") -> F64:
    """Pairwise overlap of axis-aligned boxes: intersection over union (or over the smaller).

    MediaPipe's ``OverlapSimilarity`` for ``over="union"``: 0 where boxes do not overlap.

    Args:
        a: (n, 4) boxes ``x1, y1, x2, y2`` (px or any unit shared with ``b``).
        b: (m, 4) boxes, same layout.
        over: ``"union"`` for IoU; ``"smaller"`` for intersection over the smaller box's area
            (1 when one box contains the other, whatever their sizes); ``"first"`` for
            intersection over the area of ``a``'s box (1 when it lies inside ``b``'s).

    Returns:
        (n, m) float64 in [0, 1]; 0 where a box is degenerate.
    """
    a64 = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b64 = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a64[..., 2], b64[..., 2]) - np.maximum(a64[..., 0], b64[..., 0]),
                 0.0, None)
    ih = np.clip(np.minimum(a64[..., 3], b64[..., 3]) - np.maximum(a64[..., 1], b64[..., 1]),
                 0.0, None)
    inter = iw * ih
    area_a = (np.clip(a64[..., 2] - a64[..., 0], 0, None)
              * np.clip(a64[..., 3] - a64[..., 1], 0, None))
    area_b = (np.clip(b64[..., 2] - b64[..., 0], 0, None)
              * np.clip(b64[..., 3] - b64[..., 1], 0, None))
    if over == "union":
        union = area_a + area_b - inter
    elif over == "smaller":
        union = np.minimum(area_a, area_b)
    else:
        union = np.broadcast_to(area_a, inter.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0.0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)
