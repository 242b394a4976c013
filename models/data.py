"""Calibration and held-out inputs from real people, preprocessed exactly as the pipeline does.

Sources (all pinned in :mod:`models.sources`):

* Sports2D ``demo.mp4``: 230 frames, 2 people, 1768x994. Frames 0-159 calibrate, 160-229 are
  held out.
* Pose2Sim ``Demo_SinglePerson`` cam01-cam04: 100 frames each, 1 person, 1080x1920. cam01-cam03
  calibrate, cam04 is held out (a viewpoint calibration never sees).

Detector inputs are the letterboxed 224x224 RGB [-1, 1] tensors of ``edge.detect.preprocess``.
Landmark inputs are 256x256 RGB [0, 1] crops cut by ``edge.pose2d.crop_regions`` from three
kinds of region, as the running pipeline produces them: the float detector's region, the float
landmark model's next-frame region (its auxiliary landmarks, i.e. what tracking feeds the model),
and that tracking region with a small seeded random jitter (position, scale, rotation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.detect import PoseDetector, preprocess
from edge.pose2d import crop_regions, decode_landmarks
from edge.runtime import Model
from edge.types import F32, U8
from models.sources import POSE2SIM_CAMS, SPORTS2D_DEMO, Member

logger = logging.getLogger(__name__)

CROP_SIZE = 256
"""Side of the landmark model's input crop, px."""


@dataclass(frozen=True)
class Clip:
    """One video and how its frames are split.

    Attributes:
        name: Short name used in reports.
        member: The pinned video file.
        calibration: Frame indices used for calibration.
        held_out: Frame indices used only for the fidelity check.
    """

    name: str
    member: Member
    calibration: range
    held_out: range


CLIPS: tuple[Clip, ...] = (
    Clip("sports2d", SPORTS2D_DEMO, range(0, 160), range(160, 230)),
    Clip("pose2sim_cam01", POSE2SIM_CAMS[0], range(0, 100), range(0)),
    Clip("pose2sim_cam02", POSE2SIM_CAMS[1], range(0, 100), range(0)),
    Clip("pose2sim_cam03", POSE2SIM_CAMS[2], range(0, 100), range(0)),
    Clip("pose2sim_cam04", POSE2SIM_CAMS[3], range(0), range(0, 100)),
)


@dataclass
class Frames:
    """Decoded frames of one split.

    Attributes:
        images: (H, W, 3) uint8 BGR frames (sizes differ between clips).
        labels: ``"<clip>:<frame index>"`` per frame.
    """

    images: list[U8] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def read_frames(path: Path, indices: Sequence[int]) -> list[U8]:
    """Decodes the wanted frames of a video with OpenCV.

    Args:
        path: Video file.
        indices: Frame indices (ascending).

    Returns:
        (H, W, 3) uint8 BGR frames, one per index.

    Raises:
        RuntimeError: When the video ends before the last wanted frame.
    """
    want = set(indices)
    out: list[U8] = []
    cap = cv2.VideoCapture(str(path))
    try:
        i = 0
        while len(out) < len(want):
            ok, frame = cap.read()
            if not ok:
                raise RuntimeError(f"{path}: ended at frame {i}, wanted up to {max(want)}")
            if i in want:
                out.append(np.ascontiguousarray(frame))
            i += 1
    finally:
        cap.release()
    return out


def load_splits(video_dir: Path) -> tuple[Frames, Frames]:
    """Decodes the calibration and held-out frames of every clip.

    Args:
        video_dir: Folder the pinned members were extracted into (their archive paths below it).

    Returns:
        ``(calibration, held_out)`` frames.
    """
    cal, held = Frames(), Frames()
    for clip in CLIPS:
        path = video_dir / clip.member.path
        wanted = sorted({*clip.calibration, *clip.held_out})
        frames = dict(zip(wanted, read_frames(path, wanted), strict=True))
        for split, idx in ((cal, clip.calibration), (held, clip.held_out)):
            for i in idx:
                split.images.append(frames[i])
                split.labels.append(f"{clip.name}:{i}")
    return cal, held


def detector_inputs(frames: Frames, step: int = 1) -> F32:
    """Letterboxed detector inputs of every ``step``-th frame.

    Returns:
        (n, 1, 224, 224, 3) float32 RGB in [-1, 1].
    """
    return np.stack([preprocess(img)[0] for img in frames.images[::step]])


def jitter_regions(regions: F32, rng: np.random.Generator) -> F32:
    """Perturbs regions as tracking noise would.

    Args:
        regions: (n, 5) float32 ``cx, cy, w, h`` px and rotation rad.
        rng: Seeded generator.

    Returns:
        (n, 5) float32: centre moved by N(0, 3 % of the side) px per axis, side scaled by
        exp(N(0, 0.05)), rotation turned by N(0, 0.05) rad.
    """
    out = regions.astype(np.float64).copy()
    n = out.shape[0]
    side = out[:, 2:3]
    out[:, 0:2] += rng.normal(0.0, 0.03, (n, 2)) * side
    out[:, 2:4] *= np.exp(rng.normal(0.0, 0.05, (n, 1)))
    out[:, 4] += rng.normal(0.0, 0.05, n)
    return out.astype(np.float32)


def landmark_regions(frames: Frames, detector: PoseDetector, landmark: Model, *,
                     jitter: bool, seed: int) -> Iterator[tuple[int, str, F32]]:
    """Regions the pipeline would crop in each frame.

    For every frame the float detector's regions are yielded, then the float landmark model is
    run on their crops and its next-frame regions (tracking) are yielded, then, if ``jitter``,
    a jittered copy of those.

    Args:
        frames: Frames to cut from.
        detector: Float detector.
        landmark: Float landmark model of the variant being calibrated (batch 1).
        jitter: Also yield jittered tracking regions.
        seed: Seed of the jitter.

    Yields:
        ``(frame index, kind, regions (n, 5) float32)`` with kind ``detector``, ``tracking`` or
        ``jitter``.
    """
    rng = np.random.default_rng(seed)
    for i, img in enumerate(frames.images):
        det = detector(img)
        if len(det) == 0:
            continue
        yield i, "detector", det.regions
        crops, to_frame = crop_regions(img, det.regions, CROP_SIZE)
        outs = [landmark.run(crops[j:j + 1]) for j in range(crops.shape[0])]
        merged = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        poses = decode_landmarks(merged, to_frame, det.regions, CROP_SIZE)
        present = poses.presence > 0.5
        tracked = poses.next_regions[present]
        if tracked.shape[0] == 0:
            continue
        yield i, "tracking", tracked
        if jitter:
            yield i, "jitter", jitter_regions(tracked, rng)


def landmark_crops(frames: Frames, detector: PoseDetector, landmark: Model, *, jitter: bool,
                   seed: int, keep_every: int = 1) -> tuple[F32, list[str]]:
    """Landmark model inputs cut from the regions of :func:`landmark_regions`.

    Args:
        frames: Frames to cut from.
        detector: Float detector.
        landmark: Float landmark model (batch 1).
        jitter: Include jittered tracking regions.
        seed: Seed of the jitter.
        keep_every: Keep every ``keep_every``-th crop (deterministic thinning).

    Returns:
        ``(crops, labels)``: (n, 1, 256, 256, 3) float32 RGB in [0, 1] and
        ``"<clip>:<frame>:<kind>:<person>"`` per crop.
    """
    crops: list[F32] = []
    labels: list[str] = []
    count = 0
    for i, kind, regions in landmark_regions(frames, detector, landmark, jitter=jitter,
                                             seed=seed):
        batch, _ = crop_regions(frames.images[i], regions, CROP_SIZE)
        for j in range(batch.shape[0]):
            if count % keep_every == 0:
                crops.append(batch[j:j + 1].astype(np.float32))
                labels.append(f"{frames.labels[i]}:{kind}:{j}")
            count += 1
    return np.stack(crops), labels
