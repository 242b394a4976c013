"""A camera-aware lifter input: where the person is in the image, and how large, per focal length.

:func:`edge.lift3d.normalise_2d` removes the person's image position and size, so the network
cannot tell a person at the image centre from one at its edge (where perspective skews the 2D
pose), nor near from far. These three numbers give that back: the root's offset from the
principal point and the pose's scale, both divided by the focal length (a ray direction and an
inverse depth, in units that do not depend on the image size).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

from edge.lift3d import DEFAULT_MIN_CONFIDENCE
from edge.skeleton import Coco17
from lifter import pose2sim

F32 = npt.NDArray[np.float32]
N_CAMERA = 3
_LHIP, _RHIP = int(Coco17.LEFT_HIP), int(Coco17.RIGHT_HIP)


def camera_features(keypoints: npt.ArrayLike, confidence: npt.ArrayLike,
                    principal: npt.ArrayLike, focal: npt.ArrayLike,
                    min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> F32:
    """Root offset and scale of each pose per focal length.

    The root and scale are those of :func:`edge.lift3d.normalise_2d` (mid-hip point, RMS
    distance of the valid joints from it); written again here because that function returns
    only the normalised pose.

    Args:
        keypoints: (n, 17, 2) pixels.
        confidence: (n, 17) in [0, 1].
        principal: (n, 2) or (2,) principal point, pixels (the image centre if unknown).
        focal: (n,) or scalar focal length, pixels.
        min_confidence: Joints below it are missing.

    Returns:
        (n, 3) float32: (root x - cx) / f, (root y - cy) / f, scale / f.
    """
    kp = np.asarray(keypoints, np.float64)
    cf = np.asarray(confidence, np.float64)
    finite = np.all(np.isfinite(kp), axis=-1)
    valid = finite & (cf >= min_confidence)
    kp = np.where(finite[..., None], kp, 0.0)
    hips_ok = finite[:, _LHIP] & finite[:, _RHIP]
    n_valid = np.maximum(valid.sum(axis=1), 1)
    mean_valid = (kp * valid[..., None]).sum(axis=1) / n_valid[:, None]
    root = np.where(hips_ok[:, None], 0.5 * (kp[:, _LHIP] + kp[:, _RHIP]), mean_valid)
    scale = np.sqrt((((kp - root[:, None]) * valid[..., None]) ** 2).sum(axis=(1, 2)) / n_valid)
    f = np.broadcast_to(np.asarray(focal, np.float64), (len(kp),))
    c = np.broadcast_to(np.asarray(principal, np.float64), (len(kp), 2))
    out = np.concatenate([(root - c) / f[:, None], (scale / f)[:, None]], axis=1)
    return out.astype(np.float32)


@cache
def qca_intrinsics() -> tuple[F32, F32]:
    """Principal points (4, 2) and focal lengths (4,) px of the Pose2Sim demo cameras."""
    cams = pose2sim.read_qca()
    principal = np.array([[c.k[0, 2], c.k[1, 2]] for c in cams], np.float32)
    focal = np.array([0.5 * (c.k[0, 0] + c.k[1, 1]) for c in cams], np.float32)
    return principal, focal
