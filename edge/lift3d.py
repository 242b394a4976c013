"""3D stage: lifts 2D joints to metric, root-relative 3D joints.

Two lifters share one interface, ``lift(keypoints_px, confidence) -> Lifted3D`` ((n, 17, 3)
metres and which joints were seen):

* :class:`Lifter` runs the shipped lifter network (``models/lifter_*.tflite``, a Martinez-style
  residual MLP trained by ``lifter/``) on the COCO-17 view of the 2D landmarks, batched over
  the people of a frame.
* :class:`WorldLandmarkLifter` returns the landmark model's own world landmarks, re-rooted at the
  mid-hip point, for comparison (COCO-17).

The pipeline's 3D stages (``edge.pipeline.Stage3D``: ``stage(poses_2d, track_ids) ->
edge.types.Poses3D``) wrap them: :class:`LifterStage` (the default), :class:`TemporalLifterStage`
and :class:`WorldLandmarksStage` (all 33 world landmarks).

Joint set: COCO-17 (:class:`edge.skeleton.Coco17`), every joint a BlazePose landmark. The 16
hand, foot and extra face landmarks of BlazePose carry no 3D supervision in our motion data
(the DeepMimic humanoid has rigid hands and no feet points), are the 2D model's least reliable
points, and add nothing to body pose; COCO-17 is also the set most consumers expect.

Axis convention of every 3D output here (that of MediaPipe's world landmarks): metres, origin at
the mid-hip point (mean of the two hips), **x to the right in the image, y down, z away from
the camera** (a right-handed camera frame). For the network lifter the frame is that of a
virtual camera looking straight at the person's mid-hip point: the 2D input is root-centred, so
where the person stands in the image does not matter (exact shift and scale invariance).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.runtime import Manifest, Model, load_model
from edge.skeleton import (
    BLAZEPOSE_FLIP,
    BLAZEPOSE_NAMES,
    COCO17_FROM_BLAZEPOSE,
    COCO17_NAMES,
    BlazePose,
    Coco17,
)
from edge.types import I64, Poses2D, Poses3D

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

N_JOINTS = len(Coco17)
#: Features per joint in the network input: x, y (root-centred, scale-normalised) and valid.
N_FEATURES = 3
#: Manifest keys of the lifter's input and output tensors.
INPUT_KEY = "joints_2d"
OUTPUT_KEY = "joints_3d"
#: Joints whose confidence is below this are treated as missing.
DEFAULT_MIN_CONFIDENCE = 0.5
_LHIP, _RHIP = int(Coco17.LEFT_HIP), int(Coco17.RIGHT_HIP)
_LSHO, _RSHO = int(Coco17.LEFT_SHOULDER), int(Coco17.RIGHT_SHOULDER)
#: COCO-17 index of each joint's mirror image (left <-> right; nose stays).
COCO17_FLIP: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def to_coco17(keypoints: npt.ArrayLike, confidence: npt.ArrayLike) -> tuple[F32, F32]:
    """Picks the COCO-17 joints out of BlazePose-33 arrays (other sizes must already be 17).

    Args:
        keypoints: (n, 33 or 17, 2) pixels.
        confidence: (n, 33 or 17) in [0, 1].

    Returns:
        (n, 17, 2) float32 keypoints and (n, 17) float32 confidence.

    Raises:
        ValueError: On shapes that are neither 33 nor 17 joints, or mismatched.
    """
    return _coco17_view(keypoints, confidence, 2, "keypoints_px")


def _coco17_view(points: npt.ArrayLike, confidence: npt.ArrayLike, dims: int,
                 name: str) -> tuple[F32, F32]:
    """Checks (n, 33 or 17, dims) points and (n, 33 or 17) confidence; keeps the COCO-17 ones."""
    pts = np.asarray(points, dtype=np.float32)
    cf = np.asarray(confidence, dtype=np.float32)
    if pts.ndim != 3 or pts.shape[2] != dims or pts.shape[1] not in (33, N_JOINTS):
        raise ValueError(f"{name} must be (n, 33 or 17, {dims}), got {pts.shape}")
    if cf.shape != pts.shape[:2]:
        raise ValueError(f"confidence must be {pts.shape[:2]} to match {name}, got {cf.shape}")
    if pts.shape[1] == 33:
        pts, cf = pts[:, COCO17_FROM_BLAZEPOSE], cf[:, COCO17_FROM_BLAZEPOSE]
    return pts, cf


def normalise_2d(keypoints: npt.ArrayLike, confidence: npt.ArrayLike,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> F32:
    """Root-centred, scale-normalised network input of a batch of COCO-17 poses.

    The root is the mid-hip point (the hips are used whenever their coordinates are finite,
    whatever their confidence, as the 2D model always places them; otherwise the mean of the
    valid joints). The scale is the root-mean-square distance of the valid joints from the root.
    Missing joints (confidence below ``min_confidence`` or non-finite) get x = y = 0 and
    valid = 0. The result is unchanged by any shift or positive scaling of the image.

    Args:
        keypoints: (n, 17, 2) pixels.
        confidence: (n, 17) in [0, 1].
        min_confidence: Joints below it are missing.

    Returns:
        (n, 17 * 3) float32, per joint (x, y, valid).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    cf = np.asarray(confidence, dtype=np.float64)
    finite = np.all(np.isfinite(kp), axis=-1)
    valid = finite & (cf >= min_confidence)  # NaN compares false: missing
    kp = np.where(finite[..., None], kp, 0.0)
    hips_ok = finite[:, _LHIP] & finite[:, _RHIP]
    hip_mid = 0.5 * (kp[:, _LHIP] + kp[:, _RHIP])
    n_valid = valid.sum(axis=1)
    mean_valid = (kp * valid[..., None]).sum(axis=1) / np.maximum(n_valid, 1)[:, None]
    root = np.where(hips_ok[:, None], hip_mid, mean_valid)
    centred = (kp - root[:, None, :]) * valid[..., None]
    ms = (centred ** 2).sum(axis=(1, 2)) / np.maximum(n_valid, 1)
    scale = np.sqrt(ms)
    scale = np.where((n_valid >= 2) & (scale > 1e-6), scale, 1.0)
    x = centred / scale[:, None, None]
    feats = np.concatenate([x, valid[..., None].astype(np.float64)], axis=-1)
    return feats.reshape(len(kp), N_JOINTS * N_FEATURES).astype(np.float32)


def _mirror_map(frames: int, width: int) -> tuple[npt.NDArray[np.intp], F32]:
    """Column permutation and signs mirroring (n, frames * 17 * width) rows (x is column 0)."""
    cols = (np.arange(frames)[:, None, None] * N_JOINTS * width
            + np.asarray(COCO17_FLIP)[None, :, None] * width + np.arange(width)[None, None, :])
    sign = np.ones((frames, N_JOINTS, width), np.float32)
    sign[..., 0] = -1.0
    return cols.reshape(-1), sign.reshape(-1)


def mirror_features(features: npt.ArrayLike) -> F32:
    """The network input of the mirror image: (n, K * 51) -> (n, K * 51).

    Mirroring the image (x -> -x) mirrors the root-centred, scale-normalised 2D exactly: x is
    negated and the left and right joints trade places, in every frame.
    """
    f = np.asarray(features, np.float32)
    cols, sign = _mirror_map(f.shape[1] // (N_JOINTS * N_FEATURES), N_FEATURES)
    return np.asarray(f[:, cols] * sign, np.float32)


_MIRROR_3D = _mirror_map(1, 3)


def mirror_joints(joints: npt.ArrayLike) -> F32:
    """Mirrors (..., 17, 3) poses (x -> -x, left and right joints swapped)."""
    j = np.asarray(joints, np.float32)
    flat = j.reshape(-1, N_JOINTS * 3)
    return np.asarray(flat[:, _MIRROR_3D[0]] * _MIRROR_3D[1], np.float32).reshape(j.shape)


@dataclass(frozen=True)
class Lifted3D:
    """3D poses of the people of one frame.

    Attributes:
        joints: (n_people, 17, 3) float32 metres, COCO-17 order, origin at the mid-hip point,
            x right in the image, y down, z away from the camera.
        valid: (n_people, 17) bool, whether the joint was seen in 2D (lifted joints are
            always finite; unseen ones are the network's guess).
    """

    joints: F32
    valid: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        if self.joints.ndim != 3 or self.joints.shape[1:] != (N_JOINTS, 3):
            raise ValueError(f"joints must be (n, {N_JOINTS}, 3), got {self.joints.shape}")
        if self.valid.shape != self.joints.shape[:2]:
            raise ValueError(f"valid must be {self.joints.shape[:2]}, got {self.valid.shape}")


class Lifter:
    """The shipped single-frame lifter network, batched over people.

    Args:
        model: A loaded lifter model (see :meth:`load`).
        min_confidence: 2D joints below it are treated as missing.
    """

    def __init__(self, model: Model, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> None:
        if model.entry.role != "lifter":
            raise ValueError(f"model {model.entry.key} has role {model.entry.role!r}, "
                             "not 'lifter'")
        self.model = model
        self.min_confidence = min_confidence
        self.frames = int(model.entry.inputs[0].shape[1]) // (N_JOINTS * N_FEATURES)
        self._mirror = _mirror_map(self.frames, N_FEATURES)
        self._batch = -1

    @classmethod
    def load(cls, key: str = "lifter_single_int8", threads: int = 1,
             manifest: Manifest | None = None,
             min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Lifter:
        """Loads a lifter from the manifest (sha256-checked).

        Args:
            key: Manifest key (``lifter_single_int8``, ``lifter_single_float``...).
            threads: Interpreter threads.
            manifest: Manifest to use; the default models folder when None.
            min_confidence: 2D joints below it are treated as missing.
        """
        return cls(load_model(key, threads, manifest), min_confidence)

    def run_features(self, features: F32) -> F32:
        """Runs the network on already normalised input, mirror-symmetrised.

        The network runs on the input and on its mirror image (one batch of 2n); the output is
        the mean of the first result and the mirror image of the second. A mirrored input
        therefore gives exactly the mirrored output (the network alone only learns that
        approximately), and the mean of the two readings is also more accurate (measured on
        Demo_MultiPerson: lifter/ablation_k1.json).

        Args:
            features: (n, frames * 51) float32 from :func:`normalise_2d` (frames concatenated
                oldest first).

        Returns:
            (n, 17, 3) float32 metres.
        """
        n = features.shape[0]
        if n == 0:
            return np.zeros((0, N_JOINTS, 3), np.float32)
        x = np.ascontiguousarray(features, dtype=np.float32)
        both = np.concatenate([x, x[:, self._mirror[0]] * self._mirror[1]])
        if 2 * n != self._batch:
            self.model.resize_batch(2 * n)
            self._batch = 2 * n
        out = self.model.run({INPUT_KEY: both})[OUTPUT_KEY].reshape(2 * n, N_JOINTS, 3)
        return (0.5 * (out[:n] + mirror_joints(out[n:]))).astype(np.float32)

    def lift(self, keypoints_px: npt.ArrayLike, confidence: npt.ArrayLike) -> Lifted3D:
        """Lifts the 2D poses of one frame.

        Args:
            keypoints_px: (n, 33 or 17, 2) pixels (BlazePose or COCO-17 order).
            confidence: (n, 33 or 17) in [0, 1] (visibility).

        Returns:
            The 3D poses (COCO-17, metres, root-relative; see the module docstring).
        """
        if self.frames != 1:
            raise ValueError(f"model {self.model.entry.key} takes {self.frames} frames; "
                             "use TemporalLifter")
        kp, cf = to_coco17(keypoints_px, confidence)
        feats = normalise_2d(kp, cf, self.min_confidence)
        valid = feats.reshape(-1, N_JOINTS, N_FEATURES)[..., 2] > 0
        return Lifted3D(self.run_features(feats), valid)


class TemporalLifter:
    """The causal temporal lifter: each person's last K frames in, the current pose out.

    Keeps one history per track id. It sees only the past and the current frame, so it adds no
    latency. Until a track has K frames, its poses come from ``fallback`` (the single-frame
    lifter) when one is given; without one, the track's first frame is repeated to fill the
    window.

    Args:
        model: A loaded temporal lifter model.
        min_confidence: 2D joints below it are treated as missing.
        fallback: Single-frame lifter for the first K-1 frames of a track, or None.
    """

    def __init__(self, model: Model, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 fallback: Lifter | None = None) -> None:
        self._net = Lifter(model, min_confidence)
        self.model = model
        self.frames = self._net.frames
        if fallback is not None and fallback.frames != 1:
            raise ValueError(f"fallback {fallback.model.entry.key} is not a single-frame lifter")
        self.fallback = fallback
        self._history: dict[int, deque[F32]] = {}
        self._seen: dict[int, int] = {}

    @classmethod
    def load(cls, key: str = "lifter_temporal_int8", threads: int = 1,
             manifest: Manifest | None = None,
             min_confidence: float = DEFAULT_MIN_CONFIDENCE,
             fallback_key: str | None = "lifter_single_int8") -> TemporalLifter:
        """Loads the temporal lifter and its single-frame fallback from the manifest.

        Args:
            key: Manifest key of the temporal lifter.
            threads: Interpreter threads.
            manifest: Manifest to use; the default models folder when None.
            min_confidence: 2D joints below it are treated as missing.
            fallback_key: Manifest key of the single-frame lifter (None: no fallback).
        """
        fb = (Lifter.load(fallback_key, threads, manifest, min_confidence)
              if fallback_key is not None else None)
        return cls(load_model(key, threads, manifest), min_confidence, fb)

    def reset(self) -> None:
        """Forgets every track's history."""
        self._history.clear()
        self._seen.clear()

    def lift(self, keypoints_px: npt.ArrayLike, confidence: npt.ArrayLike,
             track_ids: Sequence[int]) -> Lifted3D:
        """Lifts the 2D poses of one frame, using each track's previous frames.

        Args:
            keypoints_px: (n, 33 or 17, 2) pixels.
            confidence: (n, 33 or 17) in [0, 1].
            track_ids: n track ids; tracks absent from this frame are dropped.

        Returns:
            The 3D poses of this frame.
        """
        kp, cf = to_coco17(keypoints_px, confidence)
        if len(track_ids) != len(kp):
            raise ValueError(f"{len(track_ids)} track ids for {len(kp)} poses")
        feats = normalise_2d(kp, cf, self._net.min_confidence)
        history: dict[int, deque[F32]] = {}
        seen: dict[int, int] = {}
        stacked = []
        for i, tid in enumerate(track_ids):
            h = self._history.get(tid)
            if h is None:
                h = deque([feats[i]] * self.frames, maxlen=self.frames)
            else:
                h.append(feats[i])
            history[tid] = h
            seen[tid] = self._seen.get(tid, 0) + 1
            stacked.append(np.concatenate(list(h)))
        self._history, self._seen = history, seen
        valid = feats.reshape(-1, N_JOINTS, N_FEATURES)[..., 2] > 0
        if not stacked:
            return Lifted3D(np.zeros((0, N_JOINTS, 3), np.float32), valid)
        young = np.array([seen[t] < self.frames for t in track_ids], bool)
        if self.fallback is None:
            young[:] = False
        out = np.zeros((len(kp), N_JOINTS, 3), np.float32)
        if np.any(~young):
            x = np.stack(stacked)[~young].astype(np.float32)
            out[~young] = self._net.run_features(x)
        if np.any(young):
            assert self.fallback is not None
            out[young] = self.fallback.run_features(feats[young])
        return Lifted3D(out, valid)


class WorldLandmarkLifter:
    """Uses the landmark model's own world landmarks as the 3D poses, re-rooted at mid-hip.

    Args:
        min_confidence: Joints below it are marked not valid (their values are kept).
    """

    def __init__(self, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> None:
        self.min_confidence = min_confidence

    def lift(self, world: npt.ArrayLike, confidence: npt.ArrayLike) -> Lifted3D:
        """Re-roots world landmarks and picks the COCO-17 joints.

        Args:
            world: (n, 33 or 17, 3) metres, the landmark model's world landmarks (same axes
                as this module's output).
            confidence: (n, 33 or 17) in [0, 1].

        Returns:
            The 3D poses.
        """
        w, cf = _coco17_view(world, confidence, 3, "world")
        root = 0.5 * (w[:, _LHIP] + w[:, _RHIP])
        joints = np.nan_to_num(w - root[:, None, :]).astype(np.float32)
        return Lifted3D(joints, np.nan_to_num(cf) >= self.min_confidence)


#: COCO-17 joints that have a mirror partner (all but the nose).
_PAIRED = np.array([j for j in range(N_JOINTS) if COCO17_FLIP[j] != j], np.intp)
#: Each paired joint's partner, as an index into :data:`_PAIRED`.
_PAIRED_FLIP = np.array([list(_PAIRED).index(COCO17_FLIP[j]) for j in _PAIRED], np.intp)
_FLIP = np.array(COCO17_FLIP, np.intp)


#: :class:`LeftRight`'s defaults, chosen on the development set (Demo_MultiPerson's tracks at
#: 60 fps and as 30 fps halves, real flips and flicker injected on a timeline in seconds; the
#: demo clip at 30 fps), never on the test set. The rates are those of the continuous-time
#: chain whose step over 1/30 s has the former per-frame probabilities (0.02 start, 0.1 end):
#: rates in the ratio 1 : 5 summing to -30 ln(1 - 0.02 - 0.1) = 3.835/s, so at 30 fps the
#: filter is unchanged; the rates around them (start 0.3-1.2/s, end 1.6-6.3/s) gave no
#: better development figures, and faster ones swap the demo clip's real turn. A cost scale
#: that grows with the frame interval (``motion`` > 0 at the same scale at 30 fps) and a
#: constant-velocity prediction of the last pose both missed more injected flips at 60 fps.
#: What is left at 60 fps: ``edge-bench --lift``'s ``@60fps`` row. Development figures of
#: every choice: ``lifter.sides_dev``.
LR_SIGMA = 0.05
LR_MOTION = 0.0
LR_RATE_START = 0.639
LR_RATE_END = 3.196
#: A frame whose better labelling still costs more than ``LR_MISFIT`` (RMS radii; a frame's
#: noise and motion cost 0.01-0.1, a flip 0.4-1.0) is a misfit (a half-turned frame of the 2D
#: model): later frames are compared with the last frame and with every frame up to
#: ``LR_BRIDGE_S`` back that fitted, the best-fitting one carrying the chain. Development set
#: (``lifter.sides_dev``: 6 draws of injected flicker on Demo_MultiPerson's tracks), swapped
#: frames left at 60 / 30 fps with half-turned frames next to the flips: 288 / 468 without a
#: bridge; 101 / 155 with the former bridge (the last frame and the last that fitted, 0.1 s;
#: its misfit 0.07: 94 / 199, 0.15: 130 / 154, 0.2: 163 / 232; bridge 0.15 s: 91 / 167, 0.2 s:
#: 82 / 173); every fitted frame in the window: 0.05 s 99 / 468, 0.1 s 86 / 155, 0.15 s
#: 85 / 135 (kept), 0.2 s 76 / 135 (swaps the 30 deg/frame full turn of
#: ``tests/test_lifter_sides.py``), 0.25 s 76 / 135 (swaps 16 frames of the demo clip's real
#: turn); at 0.15 s misfit 0.08: the same, 0.12: 82 / 133, 0.15: 82 / 133 (real flips 10 / 10, not
#: 8 / 10); every frame in the window, fitted or not: 94 / 136 (0.1 s), 83 / 137 (0.2 s);
#: choosing the reference by the larger evidence instead of the better fit: 95 / 152 (0.1 s);
#: mixing the chains of all references weighted by their fit: 84-91 / 133-134 and 10 real
#: flips at 60 fps, not 8; a new track's prior share of swapped 0.01-0.1 instead of 0.001:
#: 84-86 / 133-136, the stationary 1/6: 122 / 182. Without half-turned frames the window
#: changes nothing (56 / 61 injected, 8 / 10 real, the demo clip right).
LR_MISFIT = 0.1
LR_BRIDGE_S = 0.15
#: A track absent for up to this long (s) keeps its state (the chain runs over the gap);
#: after longer it starts afresh as labelled. The development set's tracks have gaps of up to
#: 0.75 s; forgetting after 0.5 s, or a cost scale grown with the gap, left 74-85 / 89-94
#: injected flips swapped at 60 / 30 fps, against 56 / 61 with 1 s (as never forgetting).
LR_MAX_GAP_S = 1.0
#: 3D evidence (``sides_3d`` of :meth:`LeftRight.__call__`, the single-frame lifter's 3D of both
#: labellings): the 2D is weak or neutral where a person is three-quarter, side-on or half-turned
#: (both labellings look alike, or a half-turned frame sits midway), while the lifter turns
#: the body about 150-180 deg for the other labelling of a three-quarter pose (of a side-on
#: one only 20-40 deg: there neither tells much). The facing of
#: each labelling (the horizontal direction of the left-minus-right vector of shoulders and
#: hips) is compared with the reference frame's: a von Mises likelihood, cost ``(1 - cos(max(0,
#: angle - LR_TURN_RATE * dt))) / LR_FACING_SCALE`` (a person turns up to ``LR_TURN_RATE``
#: rad/s freely, so after a gap of a second the facing tells nothing), used only where the
#: 2D's two costs are within ``LR_FACING_GATE`` of each other (the lifter sees the same 2D: where
#: the 2D is clear the 3D adds no information, only its occasional wrong guesses).
#: Development figures (``lifter.sides_dev``; the 2D alone: dev 0/3/0/5 and 0/5/0/5 swapped per
#: view at 60 / 30 fps, injected flicker 56 / 61, with half-turned frames 85 / 135, flips of
#: 1-3 frames injected into the demo clip's turn to side-on 393 frames wrong, demo clip
#: right). Chosen, scale / turn rate / gate 0.15 / 6 rad/s / 0.2: dev and injected flicker
#: unchanged, half-turned 78 / 87, turn 387, demo clip right. Around it: turn rate 3: 74 / 83
#: but turn 414 (side-on, the lifter's two labellings face only 20-40 deg apart and its
#: facing jitters by 10-15 deg: evidence from noise), 5: 77 / 84, turn 398; 8: 81 / 90, 387;
#: 10: 81 / 92, 388; scale 0.1: 76 / 81, turn 400; 0.2: 79 / 94, 387; gate 0.15: 79 / 89, 391;
#: gate 0.25: injected 50 / 61, half-turned 72 / 87, turn 391 (not kept: next to the edge);
#: gate 0.3, 0.4 or none (3D everywhere): 70-72 / 87 but injected 60 / 61 and dev 0/5/0/5 at
#: 60 fps (two frames of the fused truth's own flip, 79-83, now swapped as the 2D guard does
#: at 30 fps). At scale 0.1, gate 0.2, no free turn (rate 0): 73 / 74, 2 wrong swaps in the
#: demo turn; scale 0.05: the same. Tried and dropped: the angle itself as the cost (not 1 -
#: cos): at best 74 / 93 (0.25 / 6 / 0.2), smaller scales or rates swap up to 13 frames of the
#: demo turn, where the lifter's facing of a side-on pose jumps by up to 180 deg (the von
#: Mises cost saturates there); a cost scale growing with the interval instead of a free
#: turn: 70-75 / 88-107 ungated; the lifted joints instead of the facing (mean distance of
#: the two labellings' 3D joints, scale 0.05-0.2 m): 69-73 / 120-130 ungated, 79 / 137 gated.
#: The facing from the shoulders alone: 80 / 89, turn 389; the hips alone: 75 / 92, 397. A 2D
#: facing cue (the nose against the ears) cannot help: it is the same for both labellings.
#: Cost, guard and lift of one person per frame at 1 thread: 186 -> 236 us (the stage lifts 2
#: poses per person instead of 1, one batch, and keeps the guard's rows; the guard's facing
#: comparisons 25 us).
#: Also where the better labelling misfits (over ``LR_MISFIT``: a half-turned frame fits neither
#: labelling of its reference, however far apart its two costs are), since session 14. On the
#: development set and its 11 variants (``lifter.sides_variants``: mirrored, resized, blurred,
#: dim, noisy and cropped views; 6,757 rows), the frames where the fused truth trades sides
#: itself left out (``beyond``), 6 draws: real swapped frames at 60 / 30 fps 11 / 7 -> 6 / 5,
#: injected flicker 131 / 46 -> 97 / 31, with half-turned frames 212 / 354 -> 151 / 312, no set
#: worse in any figure; the demo clip right, turn 387. Over 0.15 instead of ``LR_MISFIT``: 7 / 7,
#: 80 / 28, 122 / 223 (4 draws, against 6 / 5, 73 / 21, 116 / 218). A one-frame fixed-lag
#: decision (the frame before smoothed by the new frame's evidence; it would delay every
#: output by a frame) on top: 5 / 5, 89 / 30, 134 / 303, a few frames fewer for a frame's delay
#: of every published pose: not taken.
LR_FACING_SCALE = 0.15
LR_TURN_RATE = 6.0
LR_FACING_GATE = 0.2


def _facing(sides_3d: npt.ArrayLike, n: int) -> F32:
    """(n, 2, 2) unit facing (x, z) of each pose's two labellings (see :class:`LeftRight`).

    The horizontal direction of the left-minus-right vector of the shoulders and hips (a
    quarter turn from where the body faces; only angles between facings are used). A pose
    with no horizontal width gets (0, 0): 90 deg from everything, no evidence.
    """
    y = np.asarray(sides_3d, np.float64)
    if y.shape != (n, 2, N_JOINTS, 3):
        raise ValueError(f"sides_3d must be ({n}, 2, {N_JOINTS}, 3), got {y.shape}")
    lr = (y[:, :, _LSHO] - y[:, :, _RSHO]) + (y[:, :, _LHIP] - y[:, :, _RHIP])
    h = lr[..., [0, 2]]
    norm = np.linalg.norm(h, axis=-1, keepdims=True)
    return np.where(norm > 1e-6, h / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def lift_both_sides(lifter: Lifter, keypoints_px: npt.ArrayLike, confidence: npt.ArrayLike
                    ) -> Lifted3D:
    """Lifts each pose as labelled and with left and right exchanged, in one batch.

    Args:
        lifter: A single-frame lifter.
        keypoints_px: (n, 33 or 17, 2) pixels.
        confidence: (n, 33 or 17) in [0, 1].

    Returns:
        2n poses: rows ``0..n-1`` as labelled, rows ``n..2n-1`` exchanged (the network's
        results do not depend on the batch: row ``i`` is ``lifter.lift`` of pose ``i``
        alone). :func:`paired_sides` turns them into :class:`LeftRight`'s ``sides_3d``.
    """
    kp, cf = to_coco17(keypoints_px, confidence)
    return lifter.lift(np.concatenate([kp, kp[:, _FLIP]]), np.concatenate([cf, cf[:, _FLIP]]))


def paired_sides(both: Lifted3D) -> F32:
    """:class:`LeftRight`'s ``sides_3d`` from :func:`lift_both_sides`'s 2n poses.

    Returns:
        (n, 2, 17, 3) metres: each pose as labelled ([:, 0]) and exchanged ([:, 1]).
    """
    out: F32 = both.joints.reshape(2, -1, N_JOINTS, 3).swapaxes(0, 1)
    return out


@dataclass
class _SideFrame:
    """One frame of a track's left/right history (see :class:`LeftRight`)."""

    x: F32  # (16, 2) the paired joints (:data:`_PAIRED`) as the 2D model labelled them
    seen: npt.NDArray[np.bool_]  # (16,) those of ``x`` seen, with their partner
    log_p: npt.NDArray[np.float64]  # (2,) log-probability, normalised: as labelled, swapped
    t_s: float  # capture time, seconds
    fits: bool = True  # its better labelling fitted its reference (cost <= ``misfit``)
    facing: F32 | None = None  # (2, 2) unit facing (x, z) of each labelling's 3D, or None


class LeftRight:
    """Undoes the 2D landmark model's left/right label flips, per track and causally.

    The landmark model sometimes labels a person's left and right the other way round for a
    few frames (it takes the person to face the other way) and back again, while the person
    does not turn: every pair of joints (eyes, ears, shoulders, hips, limbs) then trades places
    at once between two frames, and visibility gives no cue (it stays high on both sides). A
    real turn is gradual: the joints move a small fraction of the body's size per frame, and
    the shoulder width passes through zero.

    Each track's labelling is a two-state hidden Markov chain, filtered forward (causal, no
    latency): the model's labelling is right (state 0) or swapped (state 1). The model's errors
    start rarely and end soon: a continuous-time chain with rates ``a = rate_start`` and
    ``b = rate_end`` per second, so between two frames ``dt`` apart the probability of a change
    is ``a / (a + b) * (1 - exp(-(a + b) dt))`` from state 0 and ``b / (a + b) * (...)`` from
    state 1 (the same behaviour in seconds at any frame rate; after a long gap, such as frames
    dropped or a track found again, the chain forgets towards its stationary share
    ``a / (a + b)`` of swapped frames instead of flipping). The evidence is
    the continuity of the true pose: each new pose (root-centred at the mid-hip and scaled to
    unit RMS radius, so independent of where the person is and how large) is compared with the
    track's reference pose (its last frame), both as the model labelled them: ``same``, the mean
    distance of the paired joints, and ``swap``, the same with one pose's left and right
    exchanged. Two frames in the same state are related by ``same``, in different states by
    ``swap``; each relation has likelihood ``exp(-cost / s)``, ``s = sigma + motion * dt``: a
    floor for the 2D model's per-frame noise plus the distance a joint may move in ``dt``. A
    flip makes ``swap`` far smaller than ``same``; a real turn keeps ``same`` small; side-on,
    where both labellings look alike, the evidence is neutral and the prior (the model is
    mostly right) decides. Frames whose swapped state is the more probable are swapped. Unlike
    a hard "labels jumped" switch, a doubtful frame cannot lock a track into the wrong
    labelling: the asymmetric prior keeps pulling it back to the model's.

    Half-turned frames: in flicker the 2D model often gives a frame whose joints sit midway
    between the two labellings (the shoulders squeezed together). It fits neither labelling of
    its neighbours, so it carries no evidence, and a frame compared with it carries none
    either: the chain loses the thread and the prior hands the track to the model's labelling.
    A new frame is therefore compared with the last frame and with every earlier frame up to
    ``bridge_s`` back that fitted its own reference (its better labelling costing at most
    ``misfit``); the reference that fits the new frame best carries the chain (run over the
    interval from it). So a run of half-turned frames up to ``bridge_s`` long is bridged; the
    comparisons with the window's frames are one vectorised step.

    3D evidence (optional, ``sides_3d`` of each call: a lifter's 3D of both labellings). Where
    the 2D cannot tell the labellings apart (side-on, three-quarter and half-turned poses: the
    two 2D costs within ``facing_gate`` of each other, or the better of them over ``misfit``,
    a frame that fits neither labelling of its reference), the lifter can: the other labelling
    of a three-quarter pose lifts to a body turned round by 150-180 deg. Each labelling's facing
    (the horizontal direction of its left-minus-right shoulders and hips) is compared with the
    reference frame's, both labellings against both: a von Mises likelihood in the angle less
    the turn ``turn_rate * dt`` a person makes freely, scale ``facing_scale``. Where the 2D is
    clear, the 3D (lifted from that same 2D) is left out. Without ``sides_3d``, the 2D alone.

    Frame times come from ``t_s`` of each call (the pipeline passes each frame's capture time);
    without them, frames are ``1 / fps`` apart. A track starts as labelled; a track absent for
    up to ``max_gap_s`` keeps its state (the chain runs over the gap), after longer it starts
    afresh. Hand-written: no library filters pose label flips. Parameters chosen on the
    development set (Demo_MultiPerson's tracks at 60 fps and at 30 fps, flips, flicker and
    half-turned frames injected, and the demo clip at 30 fps, with real flips;
    ``lifter.sides_dev``), never on the test set.

    Args:
        sigma: Cost scale floor (units of the pose's RMS radius; a flip of a frontal pose costs
            about 0.4-1.0 more than the true labelling, motion at 30 fps 0.01-0.1).
        motion: Cost scale per second of frame interval (RMS radii per second).
        rate_start: Rate (1/s) at which the model starts labelling the other way round.
        rate_end: Rate (1/s) at which such an error ends.
        fps: Nominal frame rate (Hz) for calls without a time.
        min_confidence: Joints below it are left out of the comparison.
        misfit: Cost (RMS radii) of the better labelling above which a frame is not a
            reference for the frames after the next.
        bridge_s: How far back (s) frames that fitted are kept as references (0: the last
            frame alone).
        max_gap_s: Longest absence (s) of a track that keeps its state.
        facing_scale: Scale of the 3D facing cost ``1 - cos(angle)`` (0..2).
        turn_rate: Turn (rad/s) about the vertical that costs nothing.
        facing_gate: The 3D evidence is used where the 2D costs of the two labellings differ
            by less than this (RMS radii; 0: only where the better one is over ``misfit``).
    """

    def __init__(self, sigma: float = LR_SIGMA, motion: float = LR_MOTION,
                 rate_start: float = LR_RATE_START, rate_end: float = LR_RATE_END,
                 fps: float = 30.0, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 misfit: float = LR_MISFIT, bridge_s: float = LR_BRIDGE_S,
                 max_gap_s: float = LR_MAX_GAP_S, facing_scale: float = LR_FACING_SCALE,
                 turn_rate: float = LR_TURN_RATE, facing_gate: float = LR_FACING_GATE) -> None:
        if not (sigma > 0 and motion >= 0 and rate_start > 0 and rate_end > 0 and fps > 0):
            raise ValueError(f"LeftRight needs sigma > 0, motion >= 0, rate_start > 0, "
                             f"rate_end > 0 and fps > 0; got {sigma}, {motion}, {rate_start}, "
                             f"{rate_end}, {fps}")
        if not (misfit > 0 and bridge_s >= 0 and max_gap_s >= 0):
            raise ValueError(f"LeftRight needs misfit > 0, bridge_s >= 0 and max_gap_s >= 0; "
                             f"got {misfit}, {bridge_s}, {max_gap_s}")
        if not (facing_scale > 0 and turn_rate >= 0 and facing_gate >= 0):
            raise ValueError(f"LeftRight needs facing_scale > 0, turn_rate >= 0 and "
                             f"facing_gate >= 0; got {facing_scale}, {turn_rate}, {facing_gate}")
        self.sigma, self.motion = sigma, motion
        self.rate_start, self.rate_end, self.fps = rate_start, rate_end, fps
        self.min_confidence = min_confidence
        self.misfit, self.bridge_s, self.max_gap_s = misfit, bridge_s, max_gap_s
        self.facing_scale, self.turn_rate, self.facing_gate = facing_scale, turn_rate, facing_gate
        self._tracks: dict[int, deque[_SideFrame]] = {}
        self._clock: float | None = None

    def reset(self) -> None:
        """Forgets every track."""
        self._tracks.clear()
        self._clock = None

    def _log_transition(self, dt: float) -> npt.NDArray[np.float64]:
        """(2, 2) log transition probabilities [from, to] over ``dt`` seconds."""
        total = self.rate_start + self.rate_end
        moved = -np.expm1(-total * dt)  # 1 - exp(-(a + b) dt), exact for the 2-state chain
        p_start = self.rate_start / total * moved
        p_end = self.rate_end / total * moved
        out: npt.NDArray[np.float64] = np.log(np.array([[1 - p_start, p_start],
                                                        [p_end, 1 - p_end]]))
        return out

    def _costs(self, x: F32, seen: npt.NDArray[np.bool_], refs: Sequence[_SideFrame]
               ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The new pose's ``same`` and ``swap`` costs against each of ``refs``: two (k,).

        ``x`` and ``seen`` as in :class:`_SideFrame`. NaN where fewer than 4 joints were seen
        in both frames (no evidence).
        """
        ref_x = np.stack([r.x for r in refs])  # (k, 16, 2)
        w = (seen & np.stack([r.seen for r in refs])).astype(np.float64)  # (k, 16)
        n = w.sum(1)
        n[n < 4] = np.nan
        same = (np.sqrt(((x - ref_x) ** 2).sum(-1)) * w).sum(1) / n
        swap = (np.sqrt(((x[_PAIRED_FLIP] - ref_x) ** 2).sum(-1)) * w).sum(1) / n
        return same, swap

    def _step(self, same: float, swap: float, ref: _SideFrame, t: float,
              facing: F32 | None = None) -> npt.NDArray[np.float64]:
        """The new frame's (2,) normalised log-probability, from ``ref`` and their costs.

        ``facing``: the new frame's (2, 2) facing of each labelling, or None.
        """
        dt = t - ref.t_s
        scale = self.sigma + self.motion * dt
        weak = (bool(np.isnan(same)) or abs(same - swap) < self.facing_gate
                or min(same, swap) > self.misfit)
        ev = (np.zeros((2, 2)) if np.isnan(same) else
              -np.array([[same, swap], [swap, same]]) / scale)
        if weak and facing is not None and ref.facing is not None:
            # [ref's state, new state]: the angle between the two labellings' facings
            angle = np.arccos(np.clip(ref.facing @ facing.T, -1.0, 1.0))
            turned = np.maximum(angle - self.turn_rate * dt, 0.0)
            ev = ev - (1.0 - np.cos(turned)) / self.facing_scale
        m = ref.log_p[:, None] + self._log_transition(dt) + ev
        log_p: npt.NDArray[np.float64] = np.logaddexp(m[0], m[1])
        out: npt.NDArray[np.float64] = log_p - np.logaddexp(log_p[0], log_p[1])
        return out

    def _time(self, t_s: float | None) -> float:
        """The frame's time on the guard's clock.

        A non-increasing time (a clock reset) is taken as one nominal frame after the last,
        every track's history shifted to match.
        """
        step = 1 / self.fps
        if self._clock is None:
            self._clock = 0.0 if t_s is None else t_s
            return self._clock
        if t_s is None or t_s <= self._clock:
            t = self._clock + step
            if t_s is not None:  # a clock reset: move the past to the new clock
                shift = t_s - t
                for history in self._tracks.values():
                    for f in history:
                        f.t_s += shift
                t = t_s
        else:
            t = t_s
        self._clock = t
        return t

    def __call__(self, keypoints_px: npt.ArrayLike, confidence: npt.ArrayLike,
                 track_ids: Sequence[int], t_s: float | None = None,
                 sides_3d: npt.ArrayLike | None = None) -> npt.NDArray[np.bool_]:
        """Which poses of one frame to swap left for right.

        Args:
            keypoints_px: (n, 33 or 17, 2) pixels.
            confidence: (n, 33 or 17) in [0, 1].
            track_ids: n track ids; tracks absent for longer than ``max_gap_s`` are dropped.
            t_s: The frame's capture time, seconds; None: ``1 / fps`` after the last frame.
            sides_3d: (n, 2, 17, 3) metres, COCO-17, this module's axes: each pose lifted as
                labelled ([:, 0]) and with its left and right labels exchanged ([:, 1])
                (:func:`lift_both_sides`); None: the 2D evidence alone.

        Returns:
            (n,) bool: True where the pose's left and right labels should be exchanged.
        """
        kp, cf = to_coco17(keypoints_px, confidence)
        if len(track_ids) != len(kp):
            raise ValueError(f"{len(track_ids)} track ids for {len(kp)} poses")
        t = self._time(t_s)
        feats = normalise_2d(kp, cf, self.min_confidence).reshape(-1, N_JOINTS, N_FEATURES)
        facings = None if sides_3d is None else _facing(sides_3d, len(kp))
        out = np.zeros(len(kp), bool)
        for i, tid in enumerate(track_ids):
            facing = None if facings is None else facings[i]
            ok = feats[i, :, 2] > 0
            x, seen = feats[i, _PAIRED, :2], (ok & ok[_FLIP])[_PAIRED]
            history = self._tracks.get(tid)
            if history is not None and t - history[-1].t_s > self.max_gap_s:
                history = None
            if history is None:
                first = _SideFrame(x, seen, np.log(np.array([1 - 1e-3, 1e-3])), t, True,
                                   facing)
                history = self._tracks[tid] = deque([first])
                log_p = first.log_p
            else:
                # compared with the last frame and every earlier one at most ``bridge_s`` back
                # that fitted: the reference that fits the new frame best carries the chain
                refs = [history[-1]] + [f for f in list(history)[:-1]
                                        if f.fits and t - f.t_s <= self.bridge_s]
                same, swap = self._costs(x, seen, refs)
                fit = np.minimum(same, swap)
                fit[np.isnan(fit)] = 0.0
                k = int(np.argmin(fit))
                log_p = self._step(float(same[k]), float(swap[k]), refs[k], t, facing)
                history.append(_SideFrame(x, seen, log_p, t, bool(fit[k] <= self.misfit),
                                          facing))
                while len(history) > 1 and t - history[0].t_s > self.bridge_s:
                    history.popleft()
            out[i] = log_p[1] > log_p[0]
        for tid in [k for k, h in self._tracks.items() if t - h[-1].t_s > self.max_gap_s]:
            del self._tracks[tid]
        return out


#: Limb chains (COCO-17): shoulder -> elbow -> wrist, hip -> knee -> ankle, each side.
LIMB_CHAINS: tuple[tuple[int, int, int], ...] = ((5, 7, 9), (6, 8, 10), (11, 13, 15),
                                                 (12, 14, 16))


#: Population limb proportions, each of the 8 limb bones (order of :data:`LIMB_CHAINS`: left
#: upper arm, forearm, right upper arm, forearm, left thigh, shank, right thigh, shank) as a
#: share of their sum, left and right averaged. Measured on the development set's triangulated
#: 3D (Demo_MultiPerson fused, 477 person-frames: ``edge.bench.lift.multi_tracks``), so in the
#: COCO-17 joints' own definition (the 2D model's wrist, ankle and hip points).
LIMB_PROPORTIONS: tuple[float, ...] = (0.1084, 0.1008, 0.1084, 0.1008,
                                       0.1472, 0.1436, 0.1472, 0.1436)
#: ``prior_frames`` of the 3D stages' :class:`LimbLengths`: chosen on the demo clip and the
#: development set (edge/bench/lift.py): the 29-frame track's limb CV 12.1 -> 3.3 %, the
#: development set's PA-MPJPE +0.1 mm (60 frames: 2.4 %, +0.3 mm).
LIMB_PRIOR_FRAMES = 30


class LimbLengths:
    """Keeps each track's limbs at a steady length: a causal running median per bone.

    For every track, the lengths of the 8 limb bones (upper arms, forearms, thighs, shanks) of
    its last ``window`` frames are kept; each new pose has every limb bone rescaled, along its
    own direction, to the median length (the child joints move with their bone). Torso and head
    are left as they are. A person's bones do not change length, the lifter's estimates of them
    jitter from frame to frame; the median of the past ignores the outliers and adds no latency.

    A young track has few lengths to take the median of, so each bone's target jumps from frame
    to frame. With ``prior_frames``, the target of bone b is a blend of its own median ``m_b``
    and a prior, ``p_b * S``: the population proportion :data:`LIMB_PROPORTIONS` of the
    median of the sum of all 8 bones ``S`` (the person's size, from all bones together: far
    steadier than any one of them). The prior's weight is ``prior_frames / (prior_frames +
    age)``, ``age`` the frames the track has been seen: half after ``prior_frames`` frames.

    Args:
        window: Frames of history per track (30 = 1 s at 30 fps).
        prior_frames: Strength of the prior, frames (0: no prior, the median alone).
    """

    def __init__(self, window: int = 30, prior_frames: int = 0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if prior_frames < 0:
            raise ValueError(f"prior_frames must be >= 0, got {prior_frames}")
        self.window = window
        self.prior_frames = prior_frames
        self._prior = np.asarray(LIMB_PROPORTIONS, np.float32)
        self._history: dict[int, deque[F32]] = {}
        self._age: dict[int, int] = {}

    def reset(self) -> None:
        """Forgets every track."""
        self._history.clear()
        self._age.clear()

    def __call__(self, joints: npt.ArrayLike, track_ids: Sequence[int],
                 valid: npt.ArrayLike | None = None) -> F32:
        """Rescales the limbs of one frame's poses.

        Args:
            joints: (n, 17, 3) metres, COCO-17.
            track_ids: n track ids; tracks absent from this frame are dropped.
            valid: (n, 17) bool, joints seen in 2D, or None (all). With the prior, a bone
                with an unseen end (the lifter's guess) adds nothing to the medians while
                the track has seen that bone before.

        Returns:
            (n, 17, 3) float32 metres, the same poses with limb bones at their running median.
        """
        j = np.array(joints, np.float32, copy=True)
        if len(track_ids) != len(j):
            raise ValueError(f"{len(track_ids)} track ids for {len(j)} poses")
        ok = (np.ones(j.shape[:2], bool) if valid is None
              else np.asarray(valid, bool).reshape(j.shape[:2]))
        history: dict[int, deque[F32]] = {}
        age: dict[int, int] = {}
        for i, tid in enumerate(track_ids):
            lengths = np.array([np.linalg.norm(j[i, c[k + 1]] - j[i, c[k]])
                                for c in LIMB_CHAINS for k in (0, 1)], np.float32)
            h = self._history.get(tid)
            if h is None:
                h = deque(maxlen=self.window)
            seen = np.array([ok[i, c[k]] and ok[i, c[k + 1]]
                             for c in LIMB_CHAINS for k in (0, 1)], np.float32)
            h.append(np.concatenate([lengths, seen]))  # (16,): lengths, then whether seen
            history[tid] = h
            age[tid] = self._age.get(tid, 0) + 1
            past = np.stack(list(h))
            target = np.median(past[:, :8], axis=0)
            if self.prior_frames > 0:
                target = self._with_prior(target, past, age[tid])
            b = 0
            for chain in LIMB_CHAINS:
                old = j[i, list(chain)].copy()
                for k in (0, 1):
                    d = old[k + 1] - old[k]
                    n = float(np.linalg.norm(d))
                    if n > 1e-6:
                        j[i, chain[k + 1]] = j[i, chain[k]] + d * (target[b] / n)
                    b += 1
        self._history, self._age = history, age
        return j

    def _with_prior(self, median: F32, past: F32, age: int) -> F32:
        """(8,) target lengths: each bone's ``median`` blended with the prior.

        ``past`` is (frames, 16): the 8 lengths of each past frame, then whether each was seen.
        The person's size is the median, over the frames, of the sum of the seen bones divided
        by their share of the 8 (all 8 bones when a frame saw too few of them).
        """
        lengths, seen = past[:, :8], past[:, 8:] > 0
        share = (self._prior * seen).sum(axis=1)
        few = share < 0.25
        size = np.where(few, lengths.sum(axis=1),
                        (lengths * seen).sum(axis=1) / np.maximum(share, 1e-6))
        w = self.prior_frames / (self.prior_frames + age)
        return np.asarray((1 - w) * median + w * self._prior * float(np.median(size)),
                          np.float32)

def swap_sides(poses: Poses2D, swap: npt.ArrayLike) -> Poses2D:
    """The same people with left and right labels exchanged where ``swap`` is true.

    Every per-landmark array (keypoints, depth, visibility, world landmarks) is permuted by
    :data:`edge.skeleton.BLAZEPOSE_FLIP`; positions are not mirrored (the joints stay where the
    model saw them, only their names change). Regions are unchanged.

    Args:
        poses: n people, BlazePose-33.
        swap: (n,) bool, e.g. a 3D stage's ``swapped`` after it ran on ``poses``.
    """
    sw = np.asarray(swap, bool)
    if sw.shape != (len(poses.keypoints),):
        raise ValueError(f"swap must be ({len(poses.keypoints)},), got {sw.shape}")
    if not sw.any():
        return poses
    f = BLAZEPOSE_FLIP

    def pick(a: F32) -> F32:
        out = a.copy()
        out[sw] = a[sw][:, f]
        return out

    return dataclasses.replace(poses, keypoints=pick(poses.keypoints), depth=pick(poses.depth),
                               visibility=pick(poses.visibility), world=pick(poses.world))


def _sided(stage: LifterStage | TemporalLifterStage, poses: Poses2D, tids: list[int],
           t_s: float | None, single: Lifter | None) -> tuple[F32, F32, Lifted3D | None]:
    """The stage's 2D input with its ``sides`` guard applied: (n, 33, 2) px, (n, 33).

    With a single-frame lifter, the guard gets the 3D of both labellings
    (:func:`lift_both_sides`), returned as well (2n poses); otherwise None.
    """
    kp, vis = poses.keypoints, poses.visibility
    if stage.sides is None:
        stage.swapped = np.zeros(len(kp), bool)
        return kp, vis, None
    both = None if single is None else lift_both_sides(single, kp, vis)
    sides_3d = None if both is None else paired_sides(both)
    stage.swapped = stage.sides(kp, vis, tids, t_s, sides_3d)
    if stage.swapped.any():
        sw = stage.swapped
        kp, vis = kp.copy(), vis.copy()
        kp[sw] = poses.keypoints[sw][:, BLAZEPOSE_FLIP]
        vis[sw] = poses.visibility[sw][:, BLAZEPOSE_FLIP]
    return kp, vis, both


class LifterStage:
    """The pipeline's 3D stage with the lifter network (COCO-17 joints, batched over people).

    Args:
        lifter: The single-frame lifter.
        limbs: Per-track limb-length steadying, or None.
        sides: Left/right guard, or None. It gets the lifter's 3D of both labellings of
            every pose (one batch); the poses published are those of the labelling it keeps,
            so the guard's 3D costs one lift of 2n poses instead of n.
    """

    names = COCO17_NAMES

    def __init__(self, lifter: Lifter, limbs: LimbLengths | None = None,
                 sides: LeftRight | None = None) -> None:
        self.lifter = lifter
        self.limbs = limbs
        self.sides = sides
        self.name = lifter.model.entry.key
        #: (n,) bool, the people of the last frame whose left and right were exchanged.
        self.swapped = np.zeros(0, bool)

    def __call__(self, poses: Poses2D, ids: I64, t_s: float | None = None) -> Poses3D:
        """Lifts the people of one frame: (n, 17, 3) float32 metres, root-relative.

        With ``sides``, label flips of the 2D model are undone first (:attr:`swapped` says
        where; :func:`swap_sides` does the same to the published 2D). ``t_s`` is the frame's
        capture time in seconds for ``sides`` (None: frames ``1 / fps`` apart).
        """
        tids = [int(i) for i in ids]
        kp, vis, both = _sided(self, poses, tids, t_s, self.lifter)
        if both is None:
            lifted = self.lifter.lift(kp, vis)
        else:  # the rows of the labelling kept: the same as lifting ``kp`` again
            rows = np.arange(len(kp)) + len(kp) * self.swapped
            lifted = Lifted3D(both.joints[rows], both.valid[rows])
        joints = lifted.joints
        if self.limbs is not None:
            joints = self.limbs(joints, tids, lifted.valid)
        return Poses3D(joints, self.names)

    def reset(self) -> None:
        """Forgets the tracks' limb lengths and sides."""
        if self.limbs is not None:
            self.limbs.reset()
        if self.sides is not None:
            self.sides.reset()


class TemporalLifterStage:
    """The pipeline's 3D stage with the causal temporal lifter (one history per track).

    Args:
        lifter: The temporal lifter.
        limbs: Per-track limb-length steadying, or None.
        sides: Left/right guard, or None; it gets the 3D of both labellings from the
            lifter's single-frame fallback when there is one (2D evidence alone otherwise).
    """

    names = COCO17_NAMES

    def __init__(self, lifter: TemporalLifter, limbs: LimbLengths | None = None,
                 sides: LeftRight | None = None) -> None:
        self.lifter = lifter
        self.limbs = limbs
        self.sides = sides
        self.name = lifter.model.entry.key
        #: (n,) bool, the people of the last frame whose left and right were exchanged.
        self.swapped = np.zeros(0, bool)

    def __call__(self, poses: Poses2D, ids: I64, t_s: float | None = None) -> Poses3D:
        """Lifts the people of one frame from their last K frames: (n, 17, 3) float32 m.

        ``t_s``: the frame's capture time, seconds, for ``sides`` (as :class:`LifterStage`).
        """
        tids = [int(i) for i in ids]
        kp, vis, _ = _sided(self, poses, tids, t_s, self.lifter.fallback)
        lifted = self.lifter.lift(kp, vis, tids)
        joints = lifted.joints
        if self.limbs is not None:
            joints = self.limbs(joints, tids, lifted.valid)
        return Poses3D(joints, self.names)

    def reset(self) -> None:
        """Forgets every track's history."""
        self.lifter.reset()
        if self.limbs is not None:
            self.limbs.reset()
        if self.sides is not None:
            self.sides.reset()


class WorldLandmarksStage:
    """The pipeline's 3D stage publishing the landmark model's own world landmarks.

    They are metric already; they are re-rooted exactly at the midpoint of the hips (MediaPipe
    puts the origin only approximately there). All 33 BlazePose joints. Its ``sides`` guard
    has the 2D evidence alone (no lifter here; the world landmarks of the other labelling
    are only their permutation).
    """

    name = "world_landmarks"
    names = BLAZEPOSE_NAMES

    def __init__(self, sides: LeftRight | None = None) -> None:
        self.sides = sides
        #: (n,) bool, the people of the last frame whose left and right were exchanged.
        self.swapped = np.zeros(0, bool)

    def __call__(self, poses: Poses2D, ids: I64, t_s: float | None = None) -> Poses3D:
        """Returns (n, 33, 3) float32 metres, origin midway between the hips.

        With ``sides``, the world landmarks of the people whose labels the 2D model flipped
        are relabelled (:attr:`swapped` says which); ``t_s`` is the frame's capture time in
        seconds for ``sides`` (as :class:`LifterStage`).
        """
        w = poses.world
        if self.sides is None:
            self.swapped = np.zeros(len(w), bool)
        else:
            self.swapped = self.sides(poses.keypoints, poses.visibility,
                                      [int(i) for i in ids], t_s)
            if self.swapped.any():
                w = w.copy()
                w[self.swapped] = poses.world[self.swapped][:, BLAZEPOSE_FLIP]
        root = 0.5 * (w[:, BlazePose.LEFT_HIP] + w[:, BlazePose.RIGHT_HIP])
        return Poses3D((w - root[:, None, :]).astype(np.float32), self.names)

    def reset(self) -> None:
        """Forgets the tracks' sides."""
        if self.sides is not None:
            self.sides.reset()
