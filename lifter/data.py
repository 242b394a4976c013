"""Training and evaluation samples for the lifter: 3D poses, virtual cameras, 2D errors.

3D poses (COCO-17, metres, root-relative, world frame y up) come from three sources:

* DeepMimic clips (:mod:`lifter.skeleton3d`) through forward kinematics, with random bone
  lengths and left-right mirroring; the clips of ``HELD_OUT_CLIPS`` are kept for evaluation;
* synthetic poses, joint angles sampled within anatomical limits in six modes (free, standing,
  sitting, crouching, bending, reaching) with bone lengths varied around adult means;
* real people (:mod:`lifter.real`): the landmark model's 2D landmarks with its world landmarks
  as targets, already in the camera frame.

Each 3D pose is seen through a random virtual camera (distance, height, hence pitch, roll,
focal length, and an off-axis angle: the person need not be at the image centre), projected with
a pinhole model, and given 2D errors like the 2D model's: per-joint Gaussian noise relative to
the person's size (larger at wrists and ankles), occasional outliers and left-right swaps, and
dropped joints (random ones, a lower body, an arm, the face) that get low confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.lift3d import normalise_2d
from lifter.skeleton3d import (
    F64,
    Humanoid,
    Pose,
    bone_scales,
    forward_kinematics,
    rot_axis,
)

F32 = npt.NDArray[np.float32]

#: Angle parameters of a synthetic pose, in this order (radians).
PARAMS: tuple[str, ...] = (
    "root_pitch", "root_lean", "chest_flex", "chest_lat", "chest_twist",
    "neck_flex", "neck_lat", "neck_twist",
    "r_hip_flex", "r_hip_abd", "r_hip_twist", "r_knee",
    "l_hip_flex", "l_hip_abd", "l_hip_twist", "l_knee",
    "r_sh_flex", "r_sh_abd", "r_sh_twist", "r_elbow",
    "l_sh_flex", "l_sh_abd", "l_sh_twist", "l_elbow",
)
_P = {p: i for i, p in enumerate(PARAMS)}

#: Anatomical limits (radians). Flexion is forward for hips, shoulders and elbows, forward
#: bending for chest and neck; abduction is outward; knees bend to negative angles.
LIMITS: dict[str, tuple[float, float]] = {
    "root_pitch": (-0.3, 1.6), "root_lean": (-0.25, 0.25),
    "chest_flex": (-0.3, 0.9), "chest_lat": (-0.4, 0.4), "chest_twist": (-0.6, 0.6),
    "neck_flex": (-0.6, 0.7), "neck_lat": (-0.4, 0.4), "neck_twist": (-1.1, 1.1),
    "hip_flex": (-0.4, 2.3), "hip_abd": (-0.3, 0.8), "hip_twist": (-0.5, 0.5),
    "knee": (-2.5, 0.0),
    "sh_flex": (-0.8, 3.0), "sh_abd": (-0.3, 2.8), "sh_twist": (-1.2, 1.2), "elbow": (0.0, 2.5),
}
MODES: tuple[str, ...] = ("free", "stand", "sit", "crouch", "bend", "reach")
MODE_P = np.array([0.30, 0.15, 0.15, 0.15, 0.13, 0.12])


def _limit(name: str) -> tuple[float, float]:
    key = name.removeprefix("r_").removeprefix("l_")
    return LIMITS[key]


def sample_params(rng: np.random.Generator, n: int) -> F64:
    """Samples n synthetic poses as angle vectors (n, len(PARAMS)), radians, within limits."""
    lo = np.array([_limit(p)[0] for p in PARAMS])
    hi = np.array([_limit(p)[1] for p in PARAMS])
    x = rng.uniform(lo, hi, size=(n, len(PARAMS)))
    mode = rng.choice(len(MODES), size=n, p=MODE_P)

    def setp(m: int, name: str, a: float, b: float) -> None:
        idx = np.flatnonzero(mode == m)
        x[idx, _P[name]] = rng.uniform(a, b, len(idx))

    def both(m: int, stem: str, a: float, b: float, jitter: float) -> None:
        idx = np.flatnonzero(mode == m)
        v = rng.uniform(a, b, len(idx))
        x[idx, _P["r_" + stem]] = v + rng.normal(0, jitter, len(idx))
        x[idx, _P["l_" + stem]] = v + rng.normal(0, jitter, len(idx))

    free, stand, sit, crouch, bend, reach = range(len(MODES))
    # free: sometimes lying or upside down (floor work, falls, flips)
    idx = np.flatnonzero(mode == free)
    flip = idx[rng.random(len(idx)) < 0.2]
    x[flip, _P["root_pitch"]] = rng.uniform(-np.pi, np.pi, len(flip))
    for m in (stand, reach):
        setp(m, "root_pitch", -0.1, 0.25)
        setp(m, "chest_flex", -0.2, 0.4)
        both(m, "hip_flex", -0.2, 0.4, 0.15)
        both(m, "hip_abd", -0.05, 0.3, 0.08)
        both(m, "knee", -0.4, 0.0, 0.1)
    both(reach, "sh_flex", 0.9, 3.0, 0.6)
    both(reach, "elbow", 0.0, 0.6, 0.2)
    setp(sit, "root_pitch", -0.3, 0.5)
    setp(sit, "chest_flex", -0.2, 0.6)
    both(sit, "hip_flex", 1.1, 1.9, 0.15)
    both(sit, "knee", -2.0, -1.0, 0.2)
    setp(crouch, "root_pitch", 0.2, 1.0)
    both(crouch, "hip_flex", 1.7, 2.3, 0.1)
    both(crouch, "knee", -2.5, -1.9, 0.1)
    setp(bend, "root_pitch", 0.6, 1.6)
    setp(bend, "chest_flex", 0.0, 0.6)
    idx = np.flatnonzero(mode == bend)
    for side in ("r_", "l_"):
        x[idx, _P[side + "hip_flex"]] = x[idx, _P["root_pitch"]] + rng.normal(0, 0.2, len(idx))
    both(bend, "knee", -0.5, 0.0, 0.1)
    x[:, _P["r_knee"]] = np.clip(x[:, _P["r_knee"]], -2.6, 0.0)
    x[:, _P["l_knee"]] = np.clip(x[:, _P["l_knee"]], -2.6, 0.0)
    x[:, _P["r_elbow"]] = np.clip(x[:, _P["r_elbow"]], 0.0, 2.6)
    x[:, _P["l_elbow"]] = np.clip(x[:, _P["l_elbow"]], 0.0, 2.6)
    return x


def params_to_pose(x: F64) -> Pose:
    """Angle vectors (n, len(PARAMS)) -> rotations of the DeepMimic humanoid.

    Spherical joints are ``Rz(flex) Rx(abd) Ry(twist)`` in the parent's frame (x forward, y up,
    z right); abduction is negated on the right side so that positive is outward on both.
    """
    def p(name: str) -> F64:
        return np.asarray(x[:, _P[name]])

    def sph(flex: F64, abd: F64, twist: F64) -> F64:
        return np.asarray(rot_axis(flex, 2) @ rot_axis(abd, 0) @ rot_axis(twist, 1))

    root = rot_axis(-p("root_pitch"), 2) @ rot_axis(p("root_lean"), 0)
    local = {
        "chest": sph(-p("chest_flex"), p("chest_lat"), p("chest_twist")),
        "neck": sph(-p("neck_flex"), p("neck_lat"), p("neck_twist")),
        "right_hip": sph(p("r_hip_flex"), -p("r_hip_abd"), p("r_hip_twist")),
        "left_hip": sph(p("l_hip_flex"), p("l_hip_abd"), -p("l_hip_twist")),
        "right_knee": rot_axis(p("r_knee"), 2),
        "left_knee": rot_axis(p("l_knee"), 2),
        "right_shoulder": sph(p("r_sh_flex"), -p("r_sh_abd"), p("r_sh_twist")),
        "left_shoulder": sph(p("l_sh_flex"), p("l_sh_abd"), -p("l_sh_twist")),
        "right_elbow": rot_axis(p("r_elbow"), 2),
        "left_elbow": rot_axis(p("l_elbow"), 2),
    }
    return Pose(np.asarray(root), local)


def synthetic_joints(rng: np.random.Generator, hum: Humanoid, n: int) -> F64:
    """N synthetic poses: (n, 17, 3) metres, root-relative, world frame (y up)."""
    return forward_kinematics(params_to_pose(sample_params(rng, n)), hum,
                              bone_scales(rng, n))


@dataclass(frozen=True)
class Views:
    """3D poses seen through virtual cameras.

    Attributes:
        target: (n, 17, 3) metres, root-relative, in the look-at camera frame (x right,
            y down, z away).
        kp: (n, 17, 2) pixels, with 2D errors.
        conf: (n, 17) confidence in [0, 1] (below 0.5 = dropped).
        principal: (n, 2) pixels, the principal point of each pose's camera.
        focal: (n,) pixels, its focal length.
    """

    target: F32
    kp: F32
    conf: F32
    principal: F32
    focal: F32


#: 2D noise sd per COCO-17 joint, as a fraction of the person's size (about 1 m at the root's
#: depth): the face is sharpest, wrists and ankles worst.
NOISE_SD = np.array([0.010, 0.012, 0.012, 0.015, 0.015, 0.020, 0.020, 0.025, 0.025,
                     0.035, 0.035, 0.025, 0.025, 0.025, 0.025, 0.035, 0.035])
_LEGS = np.array([13, 14, 15, 16])
_ARMS = (np.array([5, 7, 9]), np.array([6, 8, 10]))
_FACE = np.arange(5)


def look_at(rng: np.random.Generator, n: int) -> tuple[F64, F64]:
    """Random look-at cameras: rotation world -> camera (n,3,3) and root depth (n,) metres.

    The person's heading is uniform; the camera is 1.8-9 m away horizontally, 0.7 m below to
    3.5 m above the root (pitch follows), rolled by a few degrees.
    """
    yaw = rng.uniform(-np.pi, np.pi, n)
    d_h = rng.uniform(1.8, 9.0, n)
    h = rng.uniform(-0.7, 3.5, n)
    roll = np.clip(rng.normal(0, 0.08, n), -0.35, 0.35)
    # camera at (0, h, -d_h) relative to the root, in a frame where the person is yawed
    fwd = np.stack([np.zeros(n), -h, d_h], -1)
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    up = np.array([0.0, 1.0, 0.0])
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    r = np.stack([right, down, fwd], -2)
    r = rot_axis(roll, 2) @ r @ rot_axis(yaw, 1)
    return np.asarray(r), np.asarray(np.sqrt(d_h ** 2 + h ** 2))


def corrupt(rng: np.random.Generator, kp: F64, size_px: F64,
            noise: float = 1.0) -> tuple[F64, F64]:
    """Gives clean 2D joints the 2D model's kinds of error.

    Args:
        rng: Random generator.
        kp: (n, 17, 2) clean pixels.
        size_px: (n,) the person's size in pixels (1 m at the root's depth).
        noise: Multiplier of every error rate and size (0 = clean, all confident).

    Returns:
        Noisy keypoints (n, 17, 2) and confidence (n, 17).
    """
    n = len(kp)
    kp = kp.copy()
    if noise <= 0:
        return kp, np.ones((n, 17))
    level = noise * np.exp(rng.uniform(np.log(0.3), np.log(2.0), n))
    sd = NOISE_SD[None, :] * (level * size_px)[:, None]
    kp += rng.standard_normal(kp.shape) * sd[..., None]
    out = rng.random((n, 17)) < 0.015 * noise
    kp += out[..., None] * rng.normal(0, 0.12, (n, 17, 2)) * size_px[:, None, None]
    swap = rng.random(n) < 0.02 * noise
    pairs = np.array([[5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]])
    which = pairs[rng.integers(0, len(pairs), n)]
    si = np.flatnonzero(swap)
    a, b = which[si, 0], which[si, 1]
    kp[si, a], kp[si, b] = kp[si, b].copy(), kp[si, a].copy()
    drop = rng.random((n, 17)) < 0.04 * noise
    drop[np.ix_(rng.random(n) < 0.10 * noise, _LEGS)] = True
    for arm in _ARMS:
        drop[np.ix_(rng.random(n) < 0.05 * noise, arm)] = True
    drop[np.ix_(rng.random(n) < 0.04 * noise, _FACE)] = True
    conf = np.where(drop, rng.uniform(0.0, 0.45, (n, 17)), rng.uniform(0.55, 1.0, (n, 17)))
    kp += drop[..., None] * rng.normal(0, 0.15, (n, 17, 2)) * size_px[:, None, None]
    return kp, conf


def view(rng: np.random.Generator, joints_world: F64, noise: float = 1.0,
         off_axis: float = 0.35, groups: npt.NDArray[np.intp] | None = None) -> Views:
    """Projects world-frame poses through random virtual cameras and corrupts the 2D.

    Args:
        rng: Random generator.
        joints_world: (n, 17, 3) metres, root-relative, y up.
        noise: 2D error multiplier (see :func:`corrupt`).
        off_axis: Largest angle (radians) between the optical axis and the ray to the root.
        groups: (n,) camera index of each pose (one camera per sequence); one camera per pose
            when None.

    Returns:
        Targets in the look-at frame and the 2D input.
    """
    n = len(joints_world)
    g = np.arange(n) if groups is None else np.asarray(groups)
    m = int(g.max()) + 1 if n else 0
    r, depth = look_at(rng, m)
    off = rot_axis(rng.uniform(-off_axis, off_axis, m), 0) @ rot_axis(
        rng.uniform(-off_axis, off_axis, m), 1)
    f = rng.uniform(400.0, 2000.0, m)
    r, depth, off, f = r[g], depth[g], off[g], f[g]
    target = joints_world @ r.transpose(0, 2, 1)
    at_depth = target.copy()
    at_depth[..., 2] += depth[:, None]
    cam = at_depth @ off.transpose(0, 2, 1)
    z = np.maximum(cam[..., 2], 0.3)
    principal = rng.uniform(200, 1000, (n, 2))
    kp = f[:, None, None] * cam[..., :2] / z[..., None] + principal[:, None, :]
    kp, conf = corrupt(rng, kp, f / depth, noise)
    return Views(target.astype(np.float32), kp.astype(np.float32), conf.astype(np.float32),
                 principal.astype(np.float32), f.astype(np.float32))


def features(v: Views) -> F32:
    """The network input of some views, (n, 51) (see :func:`edge.lift3d.normalise_2d`)."""
    return normalise_2d(v.kp, v.conf)
