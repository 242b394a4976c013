"""The DeepMimic humanoid: motion clips from the pybullet wheel, forward kinematics, face points.

Everything here is pure numpy. The clips and the skeleton come from the pinned PyPI wheel
``pybullet==3.2.7`` (``pybullet_data/data/motions/humanoid3d_*.txt``, ``walker/*.txt`` and
``pybullet_data/humanoid/humanoid.urdf``), read straight out of the wheel file: pybullet itself is
never imported or installed.

Coordinates of the humanoid (DeepMimic's): metres, y up, x forward, z to the character's right.
Quaternions are stored (w, x, y, z) as in the motion files.

The lifter's joint set is COCO-17 (:class:`edge.skeleton.Coco17`), every joint a BlazePose
landmark. Twelve come from the kinematic chain (shoulders, elbows, wrists, hips, knees, ankles);
the five face points (nose, eyes, ears) are fixed points of the head, placed in the neck link's
frame at adult mean offsets.
"""

from __future__ import annotations

import hashlib
import io
import json
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

PYBULLET_WHEEL = "pybullet-3.2.7-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
PYBULLET_WHEEL_SHA256 = "5d858abf7c12a21ef3ed351cf81dac1b5e486ec25c9ab59bfc84beb89034edff"
#: pybullet loads humanoid.urdf with globalScaling=0.25; the motion files are in metres.
URDF_SCALE = 0.25

#: Spherical (quaternion) and revolute (one angle about z) joints, in motion-file order.
MOTION_JOINTS: tuple[tuple[str, int], ...] = (
    ("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4),
    ("right_shoulder", 4), ("right_elbow", 1), ("left_hip", 4), ("left_knee", 1),
    ("left_ankle", 4), ("left_shoulder", 4), ("left_elbow", 1),
)

#: Clips held out for evaluation, never trained on (a run, a dance, a kick, a floor get-up and
#: a turning walk: each has a sibling clip in the training set, none is seen itself).
HELD_OUT_CLIPS: tuple[str, ...] = (
    "humanoid3d_run", "humanoid3d_dance_b", "humanoid3d_spinkick", "humanoid3d_getup_faceup",
    "walker/turn_left1",
)

#: Face points in the neck link's frame (metres; x forward, y up, z right), COCO order nose,
#: left eye, right eye, left ear, right ear. The neck joint sits at shoulder height; the nose is
#: put 0.195 m above it so that nose-over-shoulders matches adult means (about a third of the
#: shoulder-to-hip height), eyes and ears around it.
FACE_OFFSETS: F64 = np.array([
    [0.105, 0.195, 0.0],
    [0.080, 0.228, -0.032], [0.080, 0.228, 0.032],
    [-0.005, 0.212, -0.075], [-0.005, 0.212, 0.075],
])

#: Bone groups whose lengths are varied together (left and right share a group).
BONE_GROUPS: tuple[str, ...] = (
    "spine", "neck", "shoulder", "upper_arm", "forearm", "pelvis", "thigh", "shin", "head")


#: Mean factors on the URDF's lengths so that the joints are where BlazePose puts its landmarks:
#: its hip landmarks are 0.21-0.22 m apart (the humanoid's hip joints 0.17 m), its shoulders
#: about 0.34 m (0.37 m), measured on the landmark model's world landmarks of real people.
BONE_MEAN: dict[str, float] = {"pelvis": 1.25, "shoulder": 0.94}


@dataclass(frozen=True)
class Humanoid:
    """Joint offsets of the DeepMimic humanoid, metres, in each parent's frame.

    Attributes:
        offsets: Joint name -> (parent name, offset (3,) metres in the parent's frame).
    """

    offsets: dict[str, tuple[str, F64]]


@dataclass(frozen=True)
class Clip:
    """One motion clip.

    Attributes:
        name: Clip name, e.g. ``humanoid3d_walk`` or ``walker/turn_left0``.
        root_pos: (T, 3) metres, root (pelvis) position in the world.
        root_rot: (T, 4) root orientation quaternions (w, x, y, z).
        local: Joint name -> (T, 4) quaternions or (T,) angles in radians.
        fps: Frame rate after resampling.
    """

    name: str
    root_pos: F64
    root_rot: F64
    local: dict[str, F64]
    fps: float


def wheel_path(cache: Path) -> Path:
    """The pinned pybullet wheel in ``cache``, checked against its sha256.

    Raises:
        FileNotFoundError: Saying how to fetch it.
        ValueError: On a hash mismatch.
    """
    path = cache / PYBULLET_WHEEL
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: `pip download --no-deps pybullet==3.2.7 -d {cache}`")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != PYBULLET_WHEEL_SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not the pinned {PYBULLET_WHEEL_SHA256}")
    return path


def load_humanoid(wheel: Path) -> Humanoid:
    """Parses the joint tree of ``pybullet_data/humanoid/humanoid.urdf`` inside the wheel."""
    with zipfile.ZipFile(wheel) as z:
        # The file ends in a NUL byte, which XML parsers reject.
        text = z.read("pybullet_data/humanoid/humanoid.urdf").decode("utf-8").rstrip("\x00")
    root = ET.parse(io.StringIO(text)).getroot()
    offsets: dict[str, tuple[str, F64]] = {}
    for joint in root.iter("joint"):
        parent = joint.find("parent")
        child = joint.find("child")
        origin = joint.find("origin")
        if parent is None or child is None or origin is None:
            continue
        xyz = np.array([float(v) for v in origin.get("xyz", "0 0 0").split()]) * URDF_SCALE
        offsets[child.get("link", "")] = (parent.get("link", ""), xyz)
    return Humanoid(offsets=offsets)


def _nlerp(a: F64, b: F64, t: F64) -> F64:
    """Normalised linear interpolation of quaternions (T,4), sign-aligned."""
    sign = np.where(np.sum(a * b, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    q = (1 - t[:, None]) * a + t[:, None] * sign * b
    return np.asarray(q / np.linalg.norm(q, axis=-1, keepdims=True))


def load_clips(wheel: Path, fps: float = 30.0) -> list[Clip]:
    """Reads every humanoid clip of the wheel and resamples it to ``fps``.

    Args:
        wheel: The pybullet wheel.
        fps: Output frame rate (frames have per-frame durations in the files).

    Returns:
        Clips sorted by name.
    """
    clips: list[Clip] = []
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith("pybullet_data/data/motions/")
                       and n.endswith(".txt") and ("humanoid3d_" in n or "/walker/" in n))
        for n in names:
            frames = np.array(json.loads(z.read(n))["Frames"], dtype=np.float64)
            name = n.removeprefix("pybullet_data/data/motions/").removesuffix(".txt")
            t_src = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])
            t_out = np.arange(0.0, t_src[-1] + 1e-9, 1.0 / fps)
            idx = np.clip(np.searchsorted(t_src, t_out, side="right") - 1, 0, len(t_src) - 2)
            w = np.clip((t_out - t_src[idx]) / np.maximum(t_src[idx + 1] - t_src[idx], 1e-9),
                        0, 1)
            a, b = frames[idx], frames[idx + 1]
            root_pos = a[:, 1:4] * (1 - w[:, None]) + b[:, 1:4] * w[:, None]
            root_rot = _nlerp(a[:, 4:8], b[:, 4:8], w)
            local: dict[str, F64] = {}
            col = 8
            for jname, size in MOTION_JOINTS:
                if size == 4:
                    local[jname] = _nlerp(a[:, col:col + 4], b[:, col:col + 4], w)
                else:
                    local[jname] = a[:, col] * (1 - w) + b[:, col] * w
                col += size
            clips.append(Clip(name, root_pos, root_rot, local, fps))
    return clips


def quat_to_matrix(q: F64) -> F64:
    """(..., 4) quaternions (w, x, y, z) -> (..., 3, 3) rotation matrices."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def rot_axis(angle: F64, axis: int) -> F64:
    """(N,) angles in radians -> (N, 3, 3) rotations about x (0), y (1) or z (2)."""
    a = np.asarray(angle, np.float64)
    c, s = np.cos(a), np.sin(a)
    out = np.zeros((*a.shape, 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., j, j] = c
    out[..., i, j] = -s
    out[..., j, i] = s
    return out


@dataclass(frozen=True)
class Pose:
    """Local joint rotations of N poses of the humanoid (no root translation).

    Attributes:
        root: (N, 3, 3) root orientation in the world (y up).
        local: Joint name -> (N, 3, 3) rotation in the parent's frame (revolute joints as
            rotations about z).
    """

    root: F64
    local: dict[str, F64]


def clip_pose(clip: Clip) -> Pose:
    """The rotations of every frame of a clip as a :class:`Pose`."""
    local = {}
    for jname, size in MOTION_JOINTS:
        v = clip.local[jname]
        local[jname] = quat_to_matrix(v) if size == 4 else rot_axis(v, 2)
    return Pose(quat_to_matrix(clip.root_rot), local)


def bone_scales(rng: np.random.Generator, n: int, spread: float = 1.0) -> dict[str, F64]:
    """Random bone-length factors around the URDF's (adult mean) lengths.

    Args:
        rng: Random generator.
        n: Number of bodies.
        spread: 0 gives the mean body, 1 the training spread (height sd 6 %, each bone
            group a further 5 %, clipped).

    Returns:
        Group name -> (N,) factor.
    """
    height = np.clip(1 + spread * 0.06 * rng.standard_normal(n), 0.82, 1.18)
    return {g: height * BONE_MEAN.get(g, 1.0)
            * np.clip(1 + spread * 0.05 * rng.standard_normal(n), 0.85, 1.15)
            for g in BONE_GROUPS}


_GROUP_OF = {"chest": "spine", "neck": "neck", "right_shoulder": "shoulder",
             "left_shoulder": "shoulder", "right_elbow": "upper_arm", "left_elbow": "upper_arm",
             "right_wrist": "forearm", "left_wrist": "forearm", "right_hip": "pelvis",
             "left_hip": "pelvis", "right_knee": "thigh", "left_knee": "thigh",
             "right_ankle": "shin", "left_ankle": "shin"}

#: COCO-17 order of the kinematic joints (index into COCO-17 -> humanoid joint).
_COCO_BODY = {5: "left_shoulder", 6: "right_shoulder", 7: "left_elbow", 8: "right_elbow",
              9: "left_wrist", 10: "right_wrist", 11: "left_hip", 12: "right_hip",
              13: "left_knee", 14: "right_knee", 15: "left_ankle", 16: "right_ankle"}


def forward_kinematics(pose: Pose, hum: Humanoid, scales: dict[str, F64] | None = None) -> F64:
    """COCO-17 joint positions of N poses, root-relative, in the world frame.

    Args:
        pose: Rotations of N poses.
        hum: The humanoid's joint offsets.
        scales: Bone group -> (N,) length factors (:func:`bone_scales`); mean body if None.

    Returns:
        (N, 17, 3) metres, origin at the mid-hip point, y up, COCO-17 order.
    """
    n = pose.root.shape[0]
    pos: dict[str, F64] = {"root": np.zeros((n, 3))}
    rot: dict[str, F64] = {"root": pose.root}
    order = ["chest", "neck", "right_hip", "right_knee", "right_ankle", "right_shoulder",
             "right_elbow", "right_wrist", "left_hip", "left_knee", "left_ankle",
             "left_shoulder", "left_elbow", "left_wrist"]
    for j in order:
        parent, off = hum.offsets[j]
        f = scales[_GROUP_OF[j]] if scales is not None else np.ones(n)
        pos[j] = pos[parent] + (rot[parent] @ (off[None, :] * f[:, None])[..., None])[..., 0]
        rot[j] = rot[parent] @ pose.local[j] if j in pose.local else rot[parent]
    out = np.zeros((n, 17, 3))
    for c, j in _COCO_BODY.items():
        out[:, c] = pos[j]
    head = scales["head"] if scales is not None else np.ones(n)
    face = (FACE_OFFSETS[None] @ rot["neck"].transpose(0, 2, 1)) * head[:, None, None]
    out[:, :5] = pos["neck"][:, None, :] + face
    return np.asarray(out - 0.5 * (out[:, 11:12] + out[:, 12:13]))


#: Left/right swap in COCO-17 order.
COCO_FLIP = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])


def mirror(joints: F64) -> F64:
    """Mirrors (N,17,3) world-frame poses (y up, z right) left-right: z -> -z, swap sides."""
    out = joints[:, COCO_FLIP].copy()
    out[..., 2] *= -1
    return np.asarray(out)
