"""The stateful core: tracked regions -> 2D pose -> tracking -> 3D -> smoothing -> annotation.

:class:`PoseCore` owns every piece of per-person state (tracker, One-Euro filters, the 3D stage)
and is driven by one thread (see ``edge.scheduler``). The detector is not part of it: its
results arrive as :class:`~edge.types.DetectorResult` whenever the detector has run.
:func:`build_pipeline` assembles detector and core from a :class:`~edge.config.Config`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edge.annotation import Annotation, JointSet, StageTimings, build_annotation
from edge.config import Config
from edge.detect import DetectorConfig as DecodeConfig
from edge.detect import PersonDetector, PoseDetector
from edge.detect.box import BoxDetectorConfig, BoxPersonDetector, box_regions
from edge.detect.levels import GrayWatch, LevelsConfig, model_view
from edge.detect.tiles import CombinedDetector, TileConfig, TiledDetector, turned_detections
from edge.lift3d import (
    LIMB_PRIOR_FRAMES,
    LeftRight,
    Lifter,
    LifterStage,
    LimbLengths,
    TemporalLifter,
    TemporalLifterStage,
    WorldLandmarksStage,
    swap_sides,
)
from edge.pose2d import PoseLandmarker
from edge.runtime import Manifest, ModelError, load_manifest, load_model, runtime_name
from edge.skeleton import BLAZEPOSE_BONES, BlazePose
from edge.smooth import OneEuroConfig, PoseSmoother
from edge.track import (
    Tracker,
    TrackerConfig,
    TrackEvent,
    Tracks,
    box_fit,
    keypoint_similarity,
    region_sides,
)
from edge.types import I64, U8, Detections, DetectorResult, Frame, Poses2D, Poses3D

logger = logging.getLogger(__name__)


def _extent(keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The body's size: the longer side of each pose's landmark box.

    Args:
        keypoints: (n, k, 2) float32 px, every landmark (seen or not).

    Returns:
        (n,) float32 px.
    """
    out: npt.NDArray[np.float32] = (keypoints.max(axis=1) - keypoints.min(axis=1)).max(axis=1)
    return out


#: :func:`body_mask`: bone thickness, head disc radius and growth, shares of the body's height.
BODY_BONE = 0.09
BODY_HEAD = 0.11
BODY_GROW = 0.06


def body_mask(kp33: npt.NDArray[np.float32], shape: tuple[int, int], height: float, *,
              dilate: bool = False) -> npt.NDArray[np.bool_]:
    """Where a person with these landmarks can be: a rough body drawn from the skeleton.

    The bones (hands and feet included) :data:`BODY_BONE` of the height thick, the torso's
    quadrilateral filled, a disc of :data:`BODY_HEAD` of the height around the head's
    landmarks, all grown by :data:`BODY_GROW` of the height (clothes, hair, fingers). The sizes
    were set by looking at the crowd benchmark's cutouts: they hold every clean silhouette and
    exclude a second person leaning in. Used by the benchmark's cutout check
    (``bench.crowd.cutouts``, ``dilate=True``) and by :func:`paint_out`.

    Args:
        kp33: (33, 2) float32 px, BlazePose landmarks in the mask's coordinates.
        shape: (h, w) of the mask.
        height: The person's height, px.
        dilate: Grow the drawn body with a dilation by a disc (the benchmark's cutouts, so its
            sets and figures, were made so); otherwise each shape is drawn grown (lines and
            the torso's outline thicker, the head's disc larger): the same shapes a few
            boundary pixels apart (0.1 %), and fast at any size, where the dilation of a
            person 1500 px tall takes 2.9 s (a 12 MP photo).

    Returns:
        (h, w) bool.
    """
    mask = np.zeros(shape, np.uint8)
    grow = max(1, round(BODY_GROW * height))
    extra = 0 if dilate else 2 * grow  # drawn grown: a width, the growth on both sides
    pts = np.round(kp33).astype(np.int32)
    thick = max(2, round(BODY_BONE * height)) + extra
    for a, b in BLAZEPOSE_BONES:
        cv2.line(mask, (int(pts[a, 0]), int(pts[a, 1])), (int(pts[b, 0]), int(pts[b, 1])), 1,
                 thick)
    torso = pts[[BlazePose.LEFT_SHOULDER, BlazePose.RIGHT_SHOULDER, BlazePose.RIGHT_HIP,
                 BlazePose.LEFT_HIP]].reshape(-1, 1, 2)
    cv2.fillPoly(mask, [torso], 1)
    if extra:
        cv2.polylines(mask, [torso], True, 1, extra)
    head = np.round(kp33[:11].mean(axis=0)).astype(int)
    cv2.circle(mask, (int(head[0]), int(head[1])), max(2, round(BODY_HEAD * height))
               + extra // 2, 1, -1)
    if dilate:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        return np.asarray(cv2.dilate(mask, kernel) > 0)
    return mask > 0


def paint_out(image: U8, keypoints: npt.NDArray[np.float32]) -> U8:
    """A copy of ``image`` with the bodies of some people painted over in the colour around.

    Each body is :func:`body_mask` of its landmarks (its height the landmarks' vertical
    extent). The paint is the mean colour of the unpainted pixels around the bodies (their
    landmarks' box, doubled), so that the landmark model sees background where they stood,
    not a shape.

    Args:
        image: (H, W, 3) uint8 BGR frame (not modified).
        keypoints: (k, 33, 2) float32 BlazePose landmarks px, every one (seen or not).

    Returns:
        (H, W, 3) uint8 BGR, a new array.
    """
    h, w = image.shape[:2]
    bodies = [kp for kp in np.asarray(keypoints, np.float32).reshape(-1, 33, 2)
              if np.isfinite(kp).all()]
    out = image.copy()
    if not bodies:
        return out
    # Drawn in a window around the bodies (their landmarks' box, doubled): the paint's colour
    # is the mean of its unpainted pixels.
    lo = np.min([kp.min(axis=0) for kp in bodies], axis=0)
    hi = np.max([kp.max(axis=0) for kp in bodies], axis=0)
    half = (hi - lo) / 2 + 0.3 * float((hi - lo)[1])
    x1, y1 = (int(max(0.0, v)) for v in np.floor(lo - half))
    x2, y2 = int(min(w, np.ceil(hi[0] + half[0]))), int(min(h, np.ceil(hi[1] + half[1])))
    if x2 <= x1 or y2 <= y1:
        return out
    origin = np.array([x1, y1], np.float32)
    mask = np.zeros((y2 - y1, x2 - x1), bool)
    for kp in bodies:
        mask |= body_mask(kp - origin, mask.shape, float(np.ptp(kp[:, 1])))
    window = out[y1:y2, x1:x2]
    around = (~mask).astype(np.uint8)
    colour = cv2.mean(window, mask=around)[:3] if around.any() else (128.0, 128.0, 128.0)
    window[mask] = np.round(colour).astype(np.uint8)
    return out


#: How frames relate to each other: a live stream, every frame of a video, or still images.
RunMode = Literal["realtime", "every-frame", "image"]


def resolve_mode(config: Config, images: bool) -> RunMode:
    """The run mode a config asks for, with ``auto`` decided by the source.

    Args:
        config: The validated configuration.
        images: Whether the source is an image file or a folder of images.

    Returns:
        ``image`` for still images under ``auto``, ``realtime`` for anything else under
        ``auto``, else the configured mode.
    """
    mode = config.scheduler.mode
    if mode == "auto":
        return "image" if images else "realtime"
    return mode


class Stage3D(Protocol):
    """A 3D stage: 2D poses of the tracked people in, metric root-relative 3D joints out."""

    name: str
    #: (n,) bool, the people of the last call whose left and right labels the stage exchanged
    #: (``edge.lift3d.LeftRight``); the published 2D gets the same exchange.
    swapped: npt.NDArray[np.bool_]

    def __call__(self, poses: Poses2D, ids: I64, t_s: float | None = None) -> Poses3D:
        """Lifts ``poses`` (rows in the order of ``ids``); ``t_s``: their capture time, s."""
        ...

    def reset(self) -> None:
        """Forgets any per-track history."""
        ...


@dataclass(frozen=True)
class StepResult:
    """What one call of :meth:`PoseCore.step` produced."""

    annotation: Annotation
    times_ms: dict[str, float]
    events: tuple[TrackEvent, ...]


class PoseCore:
    """Per-frame processing of the tracked people.

    Args:
        landmarker: The 2D landmark stage.
        lifter: The 3D stage.
        tracker: The tracker (owned: reset with the core).
        smoother: One-Euro smoothing of 2D and 3D keypoints, or None for raw output.
        device_id: Published in every annotation.
        models: Model names per stage (``detector``, ``pose2d``, ``pose3d``).
        joints: Joint names to publish.
        min_visibility: Joints below it are published as null.
        timings: Whether annotations carry per-stage timings (False for reproducible output).
        still: Still images (image mode): every new pose is refined and confirmed at once
            (:meth:`_confirm`) instead of checked against its box alone (:meth:`_misfit`).
        early: Realtime mode: a new track whose first pose fits its whole-body box is
            confirmed at once (:meth:`_early`) rather than on its next tick, which comes only
            every 2-5 frames on a loaded host. Not in every-frame mode, where waiting costs
            one frame: there it published walkers' duplicates and cost ID switches (crowd
            clips, IDF1 clip00 85.1 -> 81.0 %, clip02 0 -> 2 switches) for demo recall
            0.969 -> 0.990. Realtime mode also holds a likely duplicate back past its
            confirmation tick (``Tracker.shown``) and lets a published person whose pose is
            lost coast hidden for ``Tracker.COAST_S`` (``Tracker.update``). Demo replays,
            seeds 0-15: recall >= 0.95 in 4 -> 9 of 16, 2 IDs and no extra person in
            11 -> 15 of 16; every 2nd frame: recall 0.907 -> 0.969.
        levels: How a dark or noisy frame is shown to the landmark model
            (:func:`edge.detect.levels.model_view`; the detector gets the same view through
            :meth:`Pipeline.detect`); None: as it is.
        gray_watch: Streams: decides, from a frame every :data:`GRAY_SAMPLE_S`, whether the
            stream is gray (a night / IR camera); while it is, a pose needs only
            :data:`GRAY_PRESENCE` of ``min_presence`` (:attr:`min_presence`). The core's own
            watch (the detector's thread has another): owned by the core's thread. None: never
            gray (still images).

    A new track is published only after its pose has been confirmed in
    ``tracker.config.confirm_ticks`` ticks after the first (0: at once). The detector can report
    one person twice; the tracker merges such twins a tick later, and confirmation keeps them
    out of the output meanwhile.
    """

    def __init__(self, landmarker: PoseLandmarker, lifter: Stage3D, tracker: Tracker,
                 smoother: PoseSmoother | None, *, device_id: str, models: dict[str, str],
                 joints: JointSet = "blazepose33", min_visibility: float = 0.0,
                 timings: bool = True, still: bool = False, early: bool = False,
                 levels: LevelsConfig | None = None, gray_watch: GrayWatch | None = None
                 ) -> None:
        self.landmarker = landmarker
        self.lifter = lifter
        self.tracker = tracker
        self.smoother = smoother
        self.device_id = device_id
        self.models = dict(models)
        self.joints: JointSet = joints
        self.min_visibility = min_visibility
        self.timings = timings
        self.still = still
        self.early = early
        self.levels = levels if levels is not None else LevelsConfig()
        self.gray_watch = gray_watch
        self._gray = False  # the stream judged gray at the current frame (gray_watch)
        self._gray_t_ns: int | None = None  # capture time of the frame it last looked at
        self._view: tuple[U8, U8] | None = None  # the last image and the models' view of it
        self._last_t_ns: int | None = None

    def reset(self) -> None:
        """Forgets every track and filter; the next frame may have any timestamp."""
        self.tracker.reset()
        if self.smoother is not None:
            self.smoother.reset()
        self.lifter.reset()
        self._last_t_ns = None
        self._view = None
        self._gray = False
        self._gray_t_ns = None
        if self.gray_watch is not None:
            self.gray_watch.reset()

    @property
    def min_presence(self) -> float:
        """The presence a pose needs now (``tracker.config.min_presence``).

        On a gray stream times :data:`GRAY_PRESENCE`: the landmark model is less sure of
        people on gray crops.
        """
        base = self.tracker.config.min_presence
        return base * GRAY_PRESENCE if self._gray else base

    def model_image(self, image: U8) -> U8:
        """The image as the models see it (:func:`edge.detect.levels.model_view` by ``levels``).

        The view of the last image is kept: the detector (:meth:`Pipeline.detect`) and the
        core's step of one still ask for the same image (~23 ms a 1280x720 photo, measured
        under load). Streams' levels are inactive: the image itself, nothing kept.

        Args:
            image: (H, W, 3) uint8 BGR frame.

        Returns:
            ``image`` or its (H, W, 3) uint8 view.
        """
        if not self.levels.active:
            return image
        last = self._view
        if last is not None and last[0] is image:
            return last[1]
        view = model_view(image, self.levels)
        self._view = (image, view)
        return view

    #: Region variants tried, as (turn rad, scale), for a person whose region shows no pose:
    #: a box detection says where someone is, not which way up (lying, cartwheeling, upside
    #: down), and a fast turn or jump outruns the region propagated from the last pose.
    RESCUE = ((math.pi / 4, 1.0), (-math.pi / 4, 1.0), (0.0, 1.3), (math.pi / 2, 1.3),
              (-math.pi / 2, 1.3), (math.pi, 1.0))

    def _rescue(self, frame: Frame, regions: npt.NDArray[np.float32], poses: Poses2D,
                skip: npt.NDArray[np.bool_] | None = None) -> Poses2D:
        """Retries regions whose pose presence is below ``min_presence``, turned and scaled.

        Each variant of :data:`RESCUE` is tried; the one with the highest presence is kept.
        Rows where ``skip`` ((n,) bool) is True are not retried.

        Costs up to six landmark calls per person the model has just failed on (a newcomer
        from a detection, or someone mid-backflip), never per person tracked well.
        """
        weak = poses.presence < self.min_presence
        if skip is not None:
            weak &= ~skip
        low = np.flatnonzero(weak)
        if low.size == 0:
            return poses
        variants = []
        for turn, scale in self.RESCUE:
            varied = regions[low].copy()
            varied[:, 4] += np.float32(turn)
            varied[:, 2:4] *= np.float32(scale)
            variants.append(varied)
        # One landmark call for every variant (a parallel landmarker runs them side by side);
        # each region's pose is its own, so the choice below is the one variant by variant.
        alts = self.landmarker(frame.image, np.concatenate(variants))
        best = poses
        for v in range(len(self.RESCUE)):
            alt = alts[v * low.size:(v + 1) * low.size]
            better = alt.presence > best.presence[low]
            if better.any():
                best = best.replace_rows(low[better], alt[np.flatnonzero(better)])
        return best

    #: A pose with fewer landmarks than this seen inside the frame is someone who has left (or
    #: a region on the frame's edge where the model still imagines a body).
    MIN_INSIDE = 4

    #: :meth:`_outside`: a pose cut by the frame's side whose landmarks' extent is under this
    #: share of the largest region its track had a moment ago has shrunk onto a part of
    #: someone walking out.
    SHRUNK = 0.4

    #: :meth:`_outside`: the largest region side, in frame heights, that a stream's pose may
    #: come from.
    MAX_REGION = 2.0

    #: :meth:`_stretched`: a stream's pose whose landmarks' extent is over this many times the
    #: smallest region its track had within ``max_detection_age_s`` is spread over two
    #: people (tracks at least :data:`STRETCH_AGE_S` old).
    STRETCHED = 1.4
    STRETCH_AGE_S = 0.5

    def _outside(self, frame: Frame, poses: Poses2D) -> Poses2D:
        """Poses whose visible landmarks lie almost all outside the frame, with presence 0.

        In a stream (not still images), also poses whose landmarks' box (all of them, seen or
        not) has its centre left or right of the frame: the track ends. Demo clip: the woman's track
        lingered 1-7 frames on the left edge after she walked out (every-frame and replays of
        realtime mode); crowd clips, every frame: clip02 precision 0.926 -> 0.974, MOTA
        0.510 -> 0.540, the other clips' figures unchanged or up by 0.002. And poses cut by the
        left or right side whose landmarks' extent shrank under :data:`SHRUNK` of their track's
        size a moment ago (someone's last arm on the edge).

        Args:
            frame: The frame the poses are from.
            poses: One pose per track, in the order of ``Tracker.tracks()``.

        Returns:
            ``poses`` with presence 0 for those gone.
        """
        if len(poses) == 0:
            return poses
        h, w = frame.image.shape[:2]
        kp = poses.keypoints
        inside = ((kp[..., 0] >= 0) & (kp[..., 0] < w) & (kp[..., 1] >= 0) & (kp[..., 1] < h)
                  & (poses.visibility >= 0.5)).sum(axis=1)
        gone = inside < self.MIN_INSIDE
        if not self.still:
            # A region over MAX_REGION frame heights (its side; a landmark region is ~1.25x
            # the body) would hold a body taller than the frame can show: a region lost in
            # a backflip and grown by rescues, whose "pose" is the model's guess in a crop of
            # mostly padding (demo replays: such a track at 2-2.9x swallowed the man, found
            # again beside it, as a "part" of it).
            side = region_sides(poses.regions)
            gone |= side > self.MAX_REGION * h
            # Every landmark, seen or not: the body as the model places it. One who walks out
            # of the frame's side keeps a few visible landmarks on the edge (an arm, a
            # shoulder) for a second or more while most of the body is placed beyond it.
            # Left and right edges only: people walk out sideways; a body placed above the top
            # edge is someone mid-jump (or a region lost in a backflip, which ends anyway when
            # its visible landmarks leave), and ending it there cost the man his ID on
            # reappearing (replay seed 7: 3 IDs).
            left, right = kp[..., 0].min(axis=1), kp[..., 0].max(axis=1)
            cx = (left + right) / 2
            gone |= (cx < 0) | (cx >= w)
            cut = (left < 0) | (right >= w)
            if cut.any():  # the tracks' sizes only when someone is cut by a side
                extent = _extent(kp)
                # Cut by the left or right side (a landmark beyond it) and the body (its
                # landmarks' extent) under SHRUNK of the largest region its person had a
                # moment ago: the model has fitted a whole small body into what is left on
                # the edge (a last arm as someone walks out), not a person in view. Demo
                # clip, realtime replays: a detection of the woman's arm at the left edge
                # re-took her lost ID, its body 134 px against her 593 px region (0.23; she
                # in view: 0.61-0.66), published in frames 206-208 (real 2-thread runs: to
                # 210). Crowd clips, every frame: figures unchanged.
                gone |= cut & (extent < self.SHRUNK * self.tracker.recent_sides())
        gone = np.flatnonzero(gone)
        if gone.size == 0:
            return poses
        presence = poses.presence.copy()
        presence[gone] = 0.0
        return dataclasses.replace(poses, presence=presence)

    def _stretched(self, frame: Frame, poses: Poses2D) -> tuple[Poses2D, npt.NDArray[np.bool_]]:
        """Poses spread over two people, with presence 0 (streams only).

        A body (its landmarks' extent) over :data:`STRETCHED` times the smallest region its
        track had within ``max_detection_age_s`` (tracks at least :data:`STRETCH_AGE_S` old):
        no one grows that fast; the model has spread one pose over two people. Realtime
        replays of the demo clip: mid-backflip, the man's pose stretched over him and the
        woman at the left edge (extent 1.5-2.3x that size; every other pose of 16 seeds at most
        1.1x, typically 0.72x); her track was then merged into his as a duplicate, his ID went
        on with her, and he came back under a third ID.

        Args:
            frame: The frame the poses are from.
            poses: One pose per track, in the order of ``Tracker.tracks()``.

        Returns:
            ``poses`` with presence 0 for the stretched ones, and (n,) bool marking them (a
            published one coasts in realtime mode: tried again at its last region).
        """
        stretched = np.zeros(len(poses), bool)
        if len(poses) == 0 or self.still:
            return poses, stretched
        extent = _extent(poses.keypoints)
        smallest = self.tracker.smallest_sides(frame.t_capture_ns / 1e9, self.STRETCH_AGE_S)
        stretched = (poses.presence > 0.0) & (extent > self.STRETCHED * smallest)
        if not stretched.any():
            return poses, stretched
        presence = poses.presence.copy()
        presence[stretched] = 0.0
        return dataclasses.replace(poses, presence=presence), stretched

    #: Boxes at least this share of the frame height are close-ups, not checked by
    #: :meth:`_misfit`: someone that near is often cut by the frame edge, seen in part, and
    #: boxed with an arm or a neighbour (zidane.jpg: IoU 0.23 for a man in full view).
    CLOSE_UP = 0.5

    #: :meth:`_misfit`: a detection box older than this (s) is stale: not held against the
    #: pose of the current frame. A frame at 30 fps is 0.033 s; every-frame mode detects on
    #: the frame it processes (0 s).
    STALE_S = 0.02

    def _misfit(self, frame: Frame, tracks: Tracks, poses: Poses2D) -> Poses2D:
        """Checks the first pose of each track made from a whole-body box.

        The landmark model finds a pose in most crops; on a false detection (clutter, a part of
        someone) its landmarks rarely span the detector's box, on a person they mostly do
        (``TrackerConfig.min_box_fit``). A pose that does not fit its box is refined once, as
        a stream's next tick would: one more landmark call on the region its own landmarks
        give. The second pose is kept when it has presence, fits the box and agrees with the
        first (keypoint similarity >= ``merge_similarity``): a person the first, box-centred
        region caught off-centre. Else its presence is 0 (the tracker drops it). Crowd stills
        (100 frames, recall 40-80 / 80-160 / 160-400 px, precision): no check 0.75 / 0.87 /
        0.89, 0.92; the fit check alone 0.75 / 0.86 / 0.85, 0.96; with the refinement 0.76 /
        0.87 / 0.87, 0.95.
        """
        cfg = self.tracker.config
        h, w = frame.image.shape[:2]
        box_h = tracks.boxes[:, 3] - tracks.boxes[:, 1]
        new = np.flatnonzero((tracks.age == 0) & np.isfinite(tracks.boxes).all(axis=1)
                             & (box_h < self.CLOSE_UP * h))
        if cfg.min_box_fit <= 0.0 or new.size == 0 or len(poses) == 0:
            return poses
        fit = box_fit(tracks.boxes[new], poses.keypoints[new], (w, h))
        bad = new[(fit < cfg.min_box_fit) & (poses.presence[new] >= self.min_presence)]
        if bad.size == 0:
            return poses
        again = self.landmarker(frame.image, poses.next_regions[bad])
        fit2 = box_fit(tracks.boxes[bad], again.keypoints, (w, h))
        # A box from an older frame (realtime mode: the detector's result reaches a tick 2-8
        # frames after its frame) says where someone was, not the shape they have now: a
        # person standing up, crouching or turning no longer fits it. Such a pose is kept
        # when its refinement agrees with it, and must then survive the confirmation tick.
        # (Demo replays: the man landing from his backflip, found standing, crouched when
        # the detection arrived, was dropped for it; every-frame mode is unchanged.)
        stale = frame.t_capture_ns / 1e9 - tracks.first_seen[bad] > self.STALE_S
        keep = self._agrees(poses, bad, again, (fit2 >= cfg.min_box_fit) | stale)
        out = poses.replace_rows(bad[keep], again[np.flatnonzero(keep)]) if keep.any() else poses
        if keep.all():
            return out
        presence = out.presence.copy()
        presence[bad[~keep]] = 0.0
        return dataclasses.replace(out, presence=presence)

    def _agrees(self, poses: Poses2D, rows: npt.NDArray[np.intp], again: Poses2D,
                ok: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Which refined poses to keep: those passing ``ok`` that have presence and agree.

        Args:
            poses: The frame's first poses (n rows).
            rows: (m,) rows of ``poses`` that were refined.
            again: The m refined poses, in the order of ``rows``.
            ok: (m,) a caller's own test (the landmarks fit the detector box).

        Returns:
            (m,) bool: ``ok``, presence >= ``min_presence`` and keypoint similarity to the
            first pose (scale: the first region's side, px) >= ``merge_similarity``.
        """
        cfg = self.tracker.config
        out = np.zeros(rows.size, bool)
        for k, r in enumerate(rows):
            if not ok[k] or again.presence[k] < self.min_presence:
                continue
            scale = float(region_sides(poses.regions[r]))
            out[k] = keypoint_similarity(
                poses.keypoints[r], poses.visibility[r], again.keypoints[k],
                again.visibility[k], scale, cfg.similarity_kappa) >= cfg.merge_similarity
        return out

    def _early(self, frame: Frame, tracks: Tracks, poses: Poses2D) -> tuple[Poses2D, I64]:
        """Streams: confirms at once a new track whose first pose fits its whole-body box.

        A stream publishes a new track after its confirmation tick, on which its pose, from
        the region its first landmarks give, must still be there: a duplicate detection is
        merged, a false one loses its presence. For a track made from a whole-body box (not a
        close-up, :data:`CLOSE_UP`) whose first landmarks fit that box (``min_box_fit``), that
        next tick is taken now, as still images do (:meth:`_confirm`): one more landmark call
        on the region from its own landmarks. The refined pose replaces the first when it has
        presence, fits the box and agrees with the first (:meth:`_agrees`); the track is then
        published this tick. Others wait for their tick as before. Under load, when a tick
        comes only every 2-5 frames, the wait cost a newcomer that many frames (the demo
        clip's woman, the man after his backflip).

        Args:
            frame: The frame.
            tracks: The tracks the poses were computed for (rows alike).
            poses: Their poses, after :meth:`_misfit`.

        Returns:
            The poses (refined rows replaced) and the (k,) int64 IDs to confirm if they
            survive the tracker's update.
        """
        cfg = self.tracker.config
        none = np.zeros(0, np.int64)
        if (not self.early or cfg.confirm_ticks == 0 or cfg.min_box_fit <= 0.0
                or len(poses) == 0):
            return poses, none
        h, w = frame.image.shape[:2]
        box_h = tracks.boxes[:, 3] - tracks.boxes[:, 1]
        new = np.flatnonzero((tracks.age == 0) & np.isfinite(tracks.boxes).all(axis=1)
                             & (box_h < self.CLOSE_UP * h)
                             & (poses.presence >= self.min_presence))
        if new.size == 0:
            return poses, none
        new = new[box_fit(tracks.boxes[new], poses.keypoints[new], (w, h)) >= cfg.min_box_fit]
        if new.size == 0:
            return poses, none
        again = self.landmarker(frame.image, poses.next_regions[new])
        fits = box_fit(tracks.boxes[new], again.keypoints, (w, h)) >= cfg.min_box_fit
        good = self._agrees(poses, new, again, fits)
        if not good.any():
            return poses, none
        out = poses.replace_rows(new[good], again[np.flatnonzero(good)])
        return out, tracks.ids[new[good]].astype(np.int64)

    #: :meth:`_confirm`: side of the second try's region over the box's long side. The box
    #: detector's region (1.5 x the long side, for the landmark model's best accuracy on a
    #: person alone) often holds a more prominent neighbour in a crowd, on whom the model
    #: lands; a region of the box alone holds little of anyone else.
    TIGHT = 1.0

    def close_ups(self, boxes: npt.NDArray[np.float32], turns: npt.NDArray[np.float32],
                  wh: tuple[int, int]) -> npt.NDArray[np.bool_]:
        """Which boxes are close-ups: at least :data:`CLOSE_UP` of the frame along the body.

        Along the body: the box's height over the frame's, or for a detection turned a quarter
        turn (someone lying, a camera on its side: ``TileConfig.still_turns``) its width over
        the frame's; zidane.jpg's two men, turned, are then close-ups as they are upright.

        Args:
            boxes: (n, 4) float32 ``x1, y1, x2, y2`` px (NaN: no box, not a close-up).
            turns: (n,) float32 the detections' region turns, rad.
            wh: The frame's width and height, px.

        Returns:
            (n,) bool.
        """
        side = np.abs(np.sin(np.asarray(turns, np.float64))) > math.sqrt(0.5)
        along = np.where(side, (boxes[:, 2] - boxes[:, 0]) / wh[0],
                         (boxes[:, 3] - boxes[:, 1]) / wh[1])
        return np.asarray(np.nan_to_num(along, nan=0.0) >= self.CLOSE_UP, bool)

    def tight_regions(self, boxes: npt.NDArray[np.float32], turns: npt.NDArray[np.float32]
                      ) -> npt.NDArray[np.float32]:
        """The second try's regions: squares of :data:`TIGHT` x the boxes' long side.

        Turned as the detections were (a box found in a view of the frame turned a quarter
        turn holds someone lying: ``TileConfig.still_turns``), else upright.

        Args:
            boxes: (n, 4) float32 ``x1, y1, x2, y2`` px.
            turns: (n,) float32 the detections' region turns, rad.

        Returns:
            (n, 5) float32 regions ``cx, cy, w, h`` px, rotation rad.
        """
        out = box_regions(boxes, self.TIGHT)
        out[:, 4] = np.asarray(turns, np.float32).reshape(-1)
        return out

    def _confirm(self, frame: Frame, tracks: Tracks, poses: Poses2D) -> Poses2D:
        """Still images: refines and confirms the first pose of every track at once.

        A stream confirms a new track on its next tick, on the region its first landmarks
        give, and a still image has no next tick; so each new pose is refined here: one more
        landmark call on the region from its own landmarks. The refined pose is kept (it is
        also the better one: the region fits the body) when it has presence, agrees with the
        first (keypoint similarity >= ``merge_similarity``) and, for a whole-body box that is
        not a close-up (:data:`CLOSE_UP`), its landmarks fit the box (``min_box_fit``).

        Otherwise a track from a whole-body box gets a second try on a tight region
        (:data:`TIGHT`, centred on the box, upright), refined once more when that fits: the
        first region caught a neighbour or clutter. It is kept when its landmarks fit the box
        and have presence. A close-up's second try has no box check: it is kept when it and
        its refinement have presence and agree. A track without a whole-body box (BlazePose's
        detector) is dropped (presence 0), as is a box whose second try fails. Close-ups'
        second try, synthetic group photos (``bench.crowd.generate --layout groups``, seeds 3
        and 11, 40 frames each, 401 and 344 people): recall 0.591 / 0.619 -> 0.619 / 0.640,
        precision 0.838 / 0.845 -> 0.844 / 0.849 (28 of 32 people lost to a disagreeing
        refinement were close-ups); crowd stills (300): recall >= 80 px 0.904 -> 0.905,
        precision 0.954 -> 0.953 (+1 person, +1 false).

        Crowd stills, frames 0-99, both whole-frame detectors (recall 40-80 / 80-160 /
        160-400 px, precision, median keypoint error >= 80 px): the box check and one
        refinement of misfits only (:meth:`_misfit`) 0.73 / 0.83 / 0.90, 0.92, 2.5 %; every
        pose refined and confirmed 0.73 / 0.86 / 0.89, 0.93, 2.1 %; with the tight second try
        0.74 / 0.89 / 0.90, 0.95, 2.1 %. (A tight try for misfits alone: 0.76 / 0.87 / 0.91,
        0.92; rejecting a pose whose landmarks fit another box better than its own: no gain.)
        A confirmed pose that is another new track's person, fitting its own box worse, gets
        the tight try too (:meth:`_twins`), a close-up's as well: its region caught a
        neighbour. Every pose kept is then checked in the mirror image (:meth:`_mirrored`):
        clutter on which the model imagines a body and poses made of two people's limbs are
        turned away. A pose still the twin of one that fits its box clearly better
        (:data:`BEHIND_FIT`) is not published; its box is tried once more with that person
        painted out (:meth:`_behind`). Close-ups' twins,
        synthetic group photos (seeds 3 / 11, ``bench.crowd.stills``): recall 0.619 / 0.640
        -> 0.648 / 0.671, false persons 46 / 39 -> 41 / 35; crowd stills (1623 people): recall
        >= 80 px 0.903 -> 0.907, false persons 64 -> 59.

        Costs two landmark calls per person (the refinement and the mirror), and up to two
        more per person whose region was caught off (four more for a twin left).
        """
        cfg = self.tracker.config
        h, w = frame.image.shape[:2]
        new = np.flatnonzero((tracks.age == 0) & (poses.presence >= self.min_presence))
        if new.size == 0:
            return poses
        boxes = tracks.boxes[new]
        turns = tracks.regions[new, 4]
        has_box = np.isfinite(boxes).all(axis=1)
        checked = has_box & ~self.close_ups(boxes, turns, (w, h)) & (
            cfg.min_box_fit > 0.0)
        again = self.landmarker(frame.image, poses.next_regions[new])
        fits = ~checked | (box_fit(boxes, again.keypoints, (w, h)) >= cfg.min_box_fit)
        good = self._agrees(poses, new, again, fits)
        out = poses.replace_rows(new[good], again[np.flatnonzero(good)]) if good.any() else poses
        close_up = has_box & ~checked & (cfg.min_box_fit > 0.0)
        boxed = checked | close_up  # a whole-body box, under the box checks
        twin = boxed & self._twins(out, new, good, boxes, (w, h))
        retry = np.flatnonzero((~good | twin) & boxed)
        keep = good.copy()
        if retry.size:
            b, chk = boxes[retry], checked[retry]
            tight = self.landmarker(frame.image, self.tight_regions(b, turns[retry]))
            ok = ((~chk | (box_fit(b, tight.keypoints, (w, h)) >= cfg.min_box_fit))
                  & (tight.presence >= self.min_presence))
            if ok.any():
                sel = np.flatnonzero(ok)
                fine = self.landmarker(frame.image, tight.next_regions[sel])
                ok2 = ((~chk[sel] | (box_fit(b[sel], fine.keypoints, (w, h)) >= cfg.min_box_fit))
                       & (fine.presence >= self.min_presence))
                # a close-up has no box check: its refinement must agree with the tight pose
                ok2 &= chk[sel] | self._agrees(tight, sel, fine, ok2)
                if ok2.any():
                    tight = tight.replace_rows(sel[ok2], fine[np.flatnonzero(ok2)])
                take = sel[chk[sel] | ok2]  # a checked box keeps its tight pose as before
                out = out.replace_rows(new[retry[take]], tight[take])
                keep[retry[take]] = True
        presence = out.presence.copy()
        presence[new[~keep]] = 0.0
        kept = new[keep]
        if kept.size:
            presence[kept[~self._mirrored(frame, out, kept)]] = 0.0
        # Still a twin after the tight try, of a pose that fits its own box (min_box_fit) and
        # clearly better (its fit over BEHIND_FIT times the twin's): the person it was found
        # for is hidden behind that one, whom the model sees in every region of the box. The
        # twin is not published (the tracker would merge the two, keeping the better-scored
        # detection's pose, not the fitting one), and its box is tried once more with that
        # person painted out (:meth:`_behind`). Other twins are left to the tracker, as
        # before: dropping the worse-fitting of any two published zidane.jpg's bent man twice
        # (three boxes on him, none fitting) and bus.jpg's woman as her upper body only (her
        # box fit 0.61, her upper body's 0.64).
        alive = presence[new] >= self.min_presence
        fitting = np.nan_to_num(box_fit(boxes, out.keypoints[new], (w, h)), nan=0.0
                                ) >= cfg.min_box_fit
        partners = self._partners(out, new, alive, boxes, (w, h), among=alive & fitting,
                                  worse=self.BEHIND_FIT)
        dup = np.flatnonzero(boxed & alive & np.array([bool(p) for p in partners], bool))
        if dup.size:
            presence[new[dup]] = 0.0
            out, presence = self._behind(frame, out, presence, new, dup,
                                         [partners[a] for a in dup], boxes, turns, checked)
        return dataclasses.replace(out, presence=presence)

    #: :meth:`_confirm`: a twin is someone behind a person found when its pose fits its box
    #: under this share of that person's fit (bus.jpg's woman, boxed whole and as her upper
    #: body: 0.61 / 0.64 = 0.95; someone behind a person in a group photo: 0.42 / 0.84).
    BEHIND_FIT = 0.8

    def _behind(self, frame: Frame, poses: Poses2D, presence: npt.NDArray[np.float32],
                rows: npt.NDArray[np.intp], dup: npt.NDArray[np.intp],
                partners: list[list[int]], boxes: npt.NDArray[np.float32],
                turns: npt.NDArray[np.float32], checked: npt.NDArray[np.bool_]
                ) -> tuple[Poses2D, npt.NDArray[np.float32]]:
        """Tries again the boxes of people hidden behind a person already found.

        In a group photo the box of someone in the row behind holds the person in front, and
        the landmark model lands on that more prominent person from every region of the box
        (the wide one, its refinement and the tight one): the pose is their twin
        (:meth:`_twins`). Here each such box is tried on the frame with the people it
        duplicates painted out (:func:`paint_out`): a tight region on the box
        (:data:`TIGHT`), refined once. The refined pose is kept when both have presence and
        agree (:meth:`_agrees`), it fits the box (boxes under the box check), it is not the
        painted person's pose again, and the mean of its presence and its mirror image's
        reaches ``min_presence`` (:meth:`_mirrored`, on the painted frame).

        Synthetic group photos (seeds 3 / 11, 401 / 344 people), after the close-ups' twins'
        tight try: recall 0.648 / 0.671 -> 0.666 / 0.680, false persons 41 / 35 unchanged;
        crowd stills (1623 people): recall >= 80 px 0.907 -> 0.911 (+5 people), false
        persons 59 unchanged. Costs four landmark calls per twin left.

        Args:
            frame: The still image.
            poses: The frame's poses.
            presence: (n,) float32 their presence so far (the twins' set to 0).
            rows: (m,) rows of ``poses``: the new tracks.
            dup: (k,) indices into ``rows`` of the twins left.
            partners: For each twin, the indices into ``rows`` of the kept poses it duplicates.
            boxes: (m, 4) float32 the new tracks' detection boxes ``x1, y1, x2, y2`` px.
            turns: (m,) float32 their detections' region turns, rad (:meth:`tight_regions`).
            checked: (m,) bool, the boxes under the box check (not close-ups).

        Returns:
            The poses with the found ones' rows replaced, and their presence.
        """
        cfg = self.tracker.config
        h, w = frame.image.shape[:2]
        kp, vis = poses.keypoints[rows], poses.visibility[rows]
        presence = presence.copy()
        one = np.zeros(1, np.intp)
        for a, others in zip(dup.tolist(), partners, strict=True):
            scale = float(region_sides(poses.regions[rows[a]]))
            image = paint_out(frame.image, kp[others])
            tight = self.landmarker(image, self.tight_regions(boxes[a:a + 1], turns[a:a + 1]))
            if tight.presence[0] < self.min_presence:
                continue
            fine = self.landmarker(image, tight.next_regions)
            fits = not checked[a] or box_fit(boxes[a:a + 1], fine.keypoints,
                                             (w, h))[0] >= cfg.min_box_fit
            if not self._agrees(tight, one, fine, np.array([fits]))[0]:
                continue
            if any(keypoint_similarity(fine.keypoints[0], fine.visibility[0], kp[b], vis[b],
                                       scale, cfg.similarity_kappa) >= cfg.merge_similarity
                   for b in others):
                continue
            if not self._mirrored(dataclasses.replace(frame, image=image), fine, one)[0]:
                continue
            poses = poses.replace_rows(rows[a:a + 1], fine)
            presence[rows[a]] = fine.presence[0]
        return poses, presence

    def _twins(self, poses: Poses2D, rows: npt.NDArray[np.intp], good: npt.NDArray[np.bool_],
               boxes: npt.NDArray[np.float32], wh: tuple[int, int]) -> npt.NDArray[np.bool_]:
        """Which confirmed poses are another new track's person: their region caught a neighbour.

        Two boxes side by side often give one person twice: the region of the less prominent
        one (1.5 x its box) holds the other, on whom the landmark model lands and stays when
        refined. The tracker then merges the twins and the person behind is lost. A pose that
        is another track's pose (keypoint similarity >= ``merge_similarity``) and fits its own
        box worse than that track's pose fits theirs is that twin; :meth:`_confirm` gives it
        the tight try of a pose that failed. Crowd stills, all 300 (recall 40-80 / >= 80 px,
        precision, false persons): 0.795 / 0.900, 0.956, 64 without; 0.799 / 0.904, 0.954, 67
        with (+0.5 landmark calls a still).

        Args:
            poses: The frame's poses (the confirmed ones refined).
            rows: (m,) rows of ``poses``: the new tracks.
            good: (m,) bool, the rows whose refined pose was confirmed.
            boxes: (m, 4) float32 their detection boxes ``x1, y1, x2, y2`` px (NaN: none).
            wh: The frame's width and height, px.

        Returns:
            (m,) bool, True for a confirmed pose that is a better-fitting track's twin.
        """
        return np.array([bool(p) for p in self._partners(poses, rows, good, boxes, wh)], bool)

    def _partners(self, poses: Poses2D, rows: npt.NDArray[np.intp], good: npt.NDArray[np.bool_],
                  boxes: npt.NDArray[np.float32], wh: tuple[int, int],
                  among: npt.NDArray[np.bool_] | None = None, worse: float = 1.0
                  ) -> list[list[int]]:
        """For each confirmed pose, the new tracks whose person it is, fitting their box better.

        Args:
            poses: The frame's poses.
            rows: (m,) rows of ``poses``: the new tracks.
            good: (m,) bool, the rows whose pose was confirmed (others get no partners).
            boxes: (m, 4) float32 their detection boxes ``x1, y1, x2, y2`` px (NaN: none).
            wh: The frame's width and height, px.
            among: (m,) bool, the rows that may be partners (default: all).
            worse: A partner's pose fits its box better than ``worse`` times row a's fit.

        Returns:
            m lists of indices into ``rows``: tracks b whose pose is row a's person (keypoint
            similarity >= ``merge_similarity``) and fits b's box better than a's pose fits a's
            (``worse`` times).
        """
        cfg = self.tracker.config
        kp, vis = poses.keypoints[rows], poses.visibility[rows]
        fit = np.nan_to_num(box_fit(boxes, kp, wh), nan=-1.0)
        out: list[list[int]] = [[] for _ in range(rows.size)]
        for a in np.flatnonzero(good):
            scale = float(region_sides(poses.regions[rows[a]]))
            for b in range(rows.size):
                if a == b or fit[a] >= worse * fit[b] or (among is not None and not among[b]):
                    continue
                if keypoint_similarity(kp[a], vis[a], kp[b], vis[b], scale,
                                       cfg.similarity_kappa) >= cfg.merge_similarity:
                    out[a].append(b)
        return out

    def _mirrored(self, frame: Frame, poses: Poses2D, rows: npt.NDArray[np.intp]
                  ) -> npt.NDArray[np.bool_]:
        """Which poses are people over the frame and its mirror image (flip test-time views).

        A person seen in a mirror is still a person: the landmark model, run once more on the
        region of each pose flipped left to right, finds a body there again. Clutter, and a
        region holding pieces of two people, differ: the model imagines a body in the crop as
        it is, and in its mirror image often not. So a pose's presence is taken as the mean of
        the two views' presence, as test-time flipping averages a model's outputs, and the
        pose is kept when that reaches ``min_presence``. One landmark call per pose, in one
        batch (about 5.5 calls per crowd still).

        Crowd stills, frames 0-99, the poses :meth:`_confirm` kept (506 on people, 22 on
        clutter, 11 mixing two people: IoU 0.3-0.5 with anyone): presence in the mirror below
        0.5 for 3 / 6 / 3 of them; mean of both views below 0.5 for 0 / 3 / 2. All 300 stills
        (recall 40-80 / >= 80 px, precision, false persons): without 0.795 / 0.902, 0.949,
        74; the mean of both views 0.795 / 0.900, 0.956, 64; the mirror alone at
        ``min_presence`` 0.783 / 0.895, 0.966, 48.

        Args:
            frame: The still image.
            poses: The frame's poses.
            rows: (m,) rows of ``poses`` to check.

        Returns:
            (m,) bool, True where the mean presence of the region and its mirror image is at
            least ``min_presence``.
        """
        mirror = np.ascontiguousarray(frame.image[:, ::-1])
        seen = self.landmarker(mirror, self.mirror_regions(poses.regions[rows],
                                                           frame.image.shape[1]))
        both = (poses.presence[rows] + seen.presence) / 2
        return np.asarray(both >= self.min_presence, bool)

    @staticmethod
    def mirror_regions(regions: npt.NDArray[np.float32], width: int
                       ) -> npt.NDArray[np.float32]:
        """Regions of a frame as they lie in its mirror image (flipped left to right).

        Args:
            regions: (n, 5) float32 ``cx, cy, w, h`` px, rotation rad, in the frame.
            width: The frame's width, px.

        Returns:
            (n, 5) float32, the same regions in ``frame[:, ::-1]``: pixel centres at integer x,
            so column j is column ``width - 1 - j`` there, and a turn by r is a turn by -r.
        """
        out = np.array(regions, np.float32).reshape(-1, 5)
        out[:, 0] = np.float32(width - 1) - out[:, 0]
        out[:, 4] = -out[:, 4]
        return out

    def step(self, frame: Frame, detected: DetectorResult | None) -> StepResult:
        """Processes one frame.

        Args:
            frame: The frame; its ``t_capture_ns`` must be later than the previous frame's.
            detected: Detector output that arrived since the last step (may be from an
                earlier frame), or None.

        Returns:
            The annotation, stage times in ms, and the tracker's events.

        Raises:
            ValueError: When the frame's timestamp is not after the previous frame's.
        """
        if self._last_t_ns is not None and frame.t_capture_ns <= self._last_t_ns:
            raise ValueError(f"frame {frame.frame_id}: capture time {frame.t_capture_ns} ns is "
                             f"not after the previous frame's {self._last_t_ns} ns")
        self._last_t_ns = frame.t_capture_ns
        if self.gray_watch is not None and (
                self._gray_t_ns is None
                or frame.t_capture_ns - self._gray_t_ns >= GRAY_SAMPLE_S * 1e9):
            self._gray = self.gray_watch.update(frame.image)
            self._gray_t_ns = frame.t_capture_ns
        delivered = frame  # what the annotation describes; the models see the frame's view
        view = self.model_image(frame.image)
        if view is not frame.image:  # image mode's dark or noisy stills only
            frame = dataclasses.replace(frame, image=view)
        t = frame.t_capture_ns / 1e9
        t_start = time.perf_counter()
        events: list[TrackEvent] = []

        if detected is not None:
            events += self.tracker.add_detections(detected.detections, detected.t_s)
        tracks = self.tracker.tracks()
        t_track0 = time.perf_counter() - t_start

        t0 = time.perf_counter()
        poses = self.landmarker(frame.image, tracks.regions)
        # A newcomer from BlazePose's detector has its turn and scale from the body's own
        # keypoints. When its region, from an older frame, shows no pose now, the person has
        # moved on from it: turning and scaling it where it was finds someone else or a
        # false pose (demo replays: a region of the man mid-backflip, 1.15x the frame, grew
        # to 2.2x through rescues as a false track that took his ID). In the detector's own
        # frame (every-frame mode) the region is searched as before.
        late = ((tracks.age == 0) & ~np.isfinite(tracks.boxes).all(axis=1)
                & (t - tracks.first_seen > self.STALE_S))
        poses = self._rescue(frame, tracks.regions, poses, late)
        poses = self._outside(frame, poses)
        poses, stretched = self._stretched(frame, poses)
        early = np.zeros(0, np.int64)
        if self.still:
            poses = self._confirm(frame, tracks, poses)
        else:
            poses, early = self._early(frame, tracks, self._misfit(frame, tracks, poses))
        pose2d_ms = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        # Realtime: a published person whose pose is lost (mid-backflip, a fast turn) is kept
        # hidden at their last region for Tracker.COAST_S and tried again (with the rescue's
        # variants) each tick; not one who left the frame (_outside). Gray streams too, in
        # every mode: the box detectors find few people on gray, so a person whose pose dips
        # for a frame is rarely found again (GRAY_COAST).
        coast = (((poses.presence > 0.0) | stretched) if self.early or (self._gray and GRAY_COAST)
                 else None)
        events += self.tracker.update(poses, t, coast=coast, min_presence=self.min_presence)
        if early.size:
            self.tracker.confirm(early)
        kept = self.tracker.tracks()
        # Tracks that survived the update, each with its pose row of this tick.
        rows = {int(i): r for r, i in enumerate(tracks.ids)}
        row = np.array([rows.get(int(i), -1) for i in kept.ids], dtype=np.intp)
        kept, poses = kept[row >= 0], poses[row[row >= 0]]
        if len(kept) and (kept.last_seen < t).any():  # coasting: no pose this tick
            posed = kept.last_seen >= t
            kept, poses = kept[posed], poses[np.flatnonzero(posed)]
        track_ms = (time.perf_counter() - t0) * 1e3 + t_track0 * 1e3

        t0 = time.perf_counter()
        poses_3d = self.lifter(poses, kept.ids, t)
        if self.lifter.swapped.any():  # its left/right label fixes, on the published 2D too
            poses = swap_sides(poses, self.lifter.swapped)
        pose3d_ms = (time.perf_counter() - t0) * 1e3

        if self.smoother is not None:  # called with no people too: it forgets those who left
            sm = self.smoother.update(kept.ids, t, poses.keypoints, poses_3d.joints,
                                      starts=kept.first_seen)
            poses = dataclasses.replace(poses, keypoints=sm.keypoints)
            if sm.world is not None:
                poses_3d = Poses3D(sm.world, poses_3d.names)

        shown = self.tracker.shown(kept, hold=self.early)
        if not shown.all():
            kept, poses, poses_3d = (kept[shown], poses[shown],
                                     Poses3D(poses_3d.joints[shown], poses_3d.names))
        total_ms = (time.perf_counter() - t_start) * 1e3
        times = {"pose2d": pose2d_ms, "pose3d": pose3d_ms, "track": track_ms,
                 "total": total_ms + (detected.ms if detected is not None else 0.0)}
        if detected is not None:
            times["detect"] = detected.ms
        timings = StageTimings(detect=None if detected is None else detected.ms,
                               pose2d=pose2d_ms, pose3d=pose3d_ms, track=track_ms,
                               total=times["total"])
        annotation = build_annotation(delivered, device_id=self.device_id, models=self.models,
                                      track_ids=kept.ids, poses=poses, poses_3d=poses_3d,
                                      timings=timings, joints=self.joints,
                                      min_visibility=self.min_visibility,
                                      publish_timings=self.timings)
        return StepResult(annotation, times, tuple(events))


@dataclass
class Pipeline:
    """A detector and a core built from one config, ready for a scheduler."""

    config: Config
    detector: PersonDetector
    core: PoseCore
    manifest: Manifest
    mode: RunMode = "realtime"

    def detect(self, frame: Frame) -> DetectorResult:
        """Runs the detector on ``frame`` (timed), as the core's models see it (``levels``)."""
        t0 = time.perf_counter()
        dets = self.detector(self.core.model_image(frame.image))
        return DetectorResult(dets, frame.frame_id, frame.t_capture_ns / 1e9,
                              (time.perf_counter() - t0) * 1e3)


def _stage_3d(config: Config, manifest: Manifest) -> Stage3D:
    """The 3D stage the config asks for (``models.lifter``).

    ``mlp`` is the trained lifter (its int8 build unless a float one is shipped and asked for);
    on tflite-runtime, whose dynamic-range int8 fully-connected kernels give wrong results, it
    falls back to the world landmarks with a warning.
    """
    mc = config.models
    sides = LeftRight() if mc.left_right else None
    if mc.lifter == "world":
        return WorldLandmarksStage(sides)
    variant = "temporal" if mc.lifter == "temporal" else "single"
    try:
        entry = manifest.find("lifter", variant, mc.precision)
    except ModelError:
        entry = manifest.find("lifter", variant, "int8")
    if entry.precision == "int8" and runtime_name() == "tflite-runtime":
        logger.warning("tflite-runtime computes the int8 lifter wrongly; publishing the "
                       "landmark model's world landmarks as 3D instead (install ai-edge-litert)")
        return WorldLandmarksStage(sides)
    model = load_model(entry.key, mc.threads, manifest)
    limbs = (LimbLengths(mc.limb_window, LIMB_PRIOR_FRAMES) if mc.limb_window > 0
             else None)
    if variant == "temporal":
        # the single-frame lifter covers the first K-1 frames of every track
        single = manifest.find("lifter", "single", entry.precision)
        return TemporalLifterStage(TemporalLifter(
            model, fallback=Lifter(load_model(single.key, mc.threads, manifest))), limbs, sides)
    return LifterStage(Lifter(model), limbs, sides)


def build_landmarker(key: str, threads: int, manifest: Manifest,
                     parallel: bool = False) -> PoseLandmarker:
    """The landmark stage for ``threads`` CPU threads (``models.threads``).

    Args:
        key: The landmark model's manifest key.
        threads: CPU threads the stage may use at once.
        manifest: Models to use.
        parallel: With two or more threads, also load ``threads`` single-thread interpreters
            that take the people of a frame with more than one side by side
            (:class:`~edge.pose2d.PoseLandmarker`; ``models.landmark_parallel``); a frame with
            one person runs on the interpreter of ``threads`` threads either way. Same poses.
            Measured on the shared 2-core x86 VM (load 9-17, int8 full model, demo clip, every
            frame, no video, interleaved whole runs): 1.27-1.8x *slower* than one interpreter
            of 2 threads - each frame's fork and join waits for the slower of two threads that
            the busy machine preempts - and +49 MB RSS. Unmeasured on an idle machine, where
            two people on two cores should take about one person's time (one interpreter of
            two threads: 8.4 -> 5.4 ms per person). Off by default.

    Returns:
        The landmarker.

    Raises:
        edge.runtime.ModelError: When the model is missing or damaged.
    """
    model = load_model(key, threads, manifest)
    if threads < 2 or not parallel:
        return PoseLandmarker(model)
    return PoseLandmarker(model, parallel=[load_model(key, 1, manifest) for _ in range(threads)])


def _landmark_key(manifest: Manifest, variant: str, precision: str) -> str:
    return manifest.find("landmark", variant, precision).key


#: Still images also take tiles of this share of the tile side (``TileConfig.fine_px``): a
#: 416-px model input then sees a person 1.4x larger than in a 416-px tile.
FINE_TILES = 0.72


#: The box detector's default ``min_score`` on still images: lower than a stream's (0.35),
#: since every still person's pose is refined and confirmed against its box at once
#: (:meth:`PoseCore._confirm`), which turns most clutter away. Crowd stills, 300 frames
#: (recall 40-80 / >= 80 px, precision): 0.75 / 0.88, 0.97 at 0.35; 0.79 / 0.89, 0.95 at 0.3
#: (frames 0-99 at 0.25: 0.79 / 0.91, 0.93).
STILL_MIN_SCORE = 0.3


#: Still images: how a dark or noisy image is shown to the models (``edge.detect.levels``):
#: brightened when its luminance's 99th percentile is under 128 (the crowd stills: 181-248;
#: at 25 % brightness 52-62), smoothed when its noise is over 6 grey levels (the crowd stills
#: and the test photos: 0.5-1.5; with noise of sd 25 per channel 15-17). Crowd stills 0-99
#: and group photos (seed 3) in those looks: see ``bench/crowd/README.md``, "Other cameras".
#: Smoothed too when its JPEG blocks show (blockiness over 1.8: the crowd stills 1.00-1.30,
#: bus.jpg 1.24, zidane.jpg 1.74; at JPEG q20 1.35-5.4): crowd stills 0-99 at q20, found /
#: false 357 / 52 -> 382 / 40 (88 of 100 smoothed; every one smoothed 379 / 41, over 2.0 364 /
#: 47; a blur of sd 0.7 on every one 385 / 50). Streams are left as they are (unmeasured there).
LEVELS = LevelsConfig(dark_p99=128.0, noise_sigma=6.0, block_ratio=1.8)

#: Still images: the whole frame is also detected turned a quarter turn each way, and a frame
#: found to be on its side is detected turned (``TileConfig.still_turns``): people lying, a
#: camera on its side, a photo without its EXIF orientation. 2 more detector calls a still.
STILL_TURNS = True


#: Streams under ``detector.kind = "both"``: while the frames are gray (a night / IR camera,
#: ``edge.detect.levels.GrayWatch``), BlazePose's detector's slots of the rotation run NanoDet
#: on the whole frame instead (``TiledDetector.gray_watch``). Every frame, plain -> gray ->
#: gray with this (recall >= 80 px): demo clip presence 372 -> 353 -> 356 of 386 person-frames;
#: crowd clips (seed 0, 4 clips, max_persons 6) clip01 94.9 -> 53.8 -> 55.1 %, clip02 84.0 ->
#: 67.3 -> 68.4 %; (seed 0, 2 clips, max_persons 16) clip00 67.6 -> 64.8 -> 64.6 %, clip01
#: 82.2 -> 74.1 -> 76.0 %. Colour streams: unchanged. Those slots given to tiles instead:
#: demo 353, crowd (2 clips) 64.6 / 74.4 %. Most of what gray loses is elsewhere: the
#: landmark model's presence on gray crops, and poses that land between two people.
GRAY_STREAMS = True

#: Streams judged gray (``PoseCore.gray_watch``): a pose needs this share of
#: ``[tracking] min_presence`` (0.5 -> 0.4), everywhere the core asks for presence (the
#: tracker keeping a person, the rescue, the box checks and refinements). The landmark model
#: is less sure of people on gray crops. Crowd clips made gray (``bench.crowd.looks``, 4 clips
#: a seed, every frame; recall >= 80 px / all, precision (false persons)), main -> 0.4:
#: seed 0 71.9 / 60.5 %, 98.3 % (22) -> 72.2 / 60.7 %, 98.4 % (20); seed 1 34.8 / 29.2 %,
#: 94.8 % (31) -> 37.1 / 32.2 %, 97.5 % (16); held out: seed 2 77.0 / 63.4 %, 97.7 % (23) ->
#: 77.8 / 64.2 %, 97.6 % (24); seed 3 57.6 / 51.5 %, 92.5 % (86) -> 59.2 / 52.5 %, 92.3 %
#: (90). Demo clip made gray: 356 -> 359 of 386 person-frames. Chosen on seeds 0-1 among
#: thresholds 0.2 / 0.3 / 0.4 (recall >= 80 px seed 0, seed 1; false persons): 70.5, 38.9 %;
#: 51 + 37 / 72.3, 37.2 %; 30 + 17 / 72.2, 37.1 %; 20 + 16. What
#: gray loses most is not here: the box detectors miss people on gray (seed 1 clip02: 15
#: detections in colour, 2 gray), and a track lost there is rarely found again. Colour
#: streams are unchanged (byte for byte).
GRAY_PRESENCE = 0.8

#: Gray streams in every-frame mode also let a published person whose pose is lost coast
#: hidden at their last region for ``Tracker.COAST_S`` and be tried again, as realtime mode
#: does for every stream (``PoseCore.step``). On gray the box detectors find few people (seed 1
#: clip02: 2 detections in 150 frames, 15 in colour), so a track ended by one frame without a
#: pose is lost for good. Crowd clips made gray, on top of :data:`GRAY_PRESENCE` (recall
#: >= 80 px / all, precision (false persons)): seed 0 72.2 / 60.7 %, 98.4 % (20) -> 71.4 / 60.1
#: %, 97.9 % (26); seed 1 37.1 / 32.2 %, 97.5 % (16) -> 42.3 / 43.2 %, 96.3 % (32); held out:
#: seed 2 77.8 / 64.2 %, 97.6 % (24) -> 81.1 / 67.2 %, 97.9 % (22); seed 3 the same.
#: IDF1 rises where people were lost (seed 1 clip00 26.1 -> 71.7 %, seed 2 clip02 70.0 ->
#: 88.0 %). Colour streams: unchanged.
GRAY_COAST = True

#: The core looks at a stream's colour (``PoseCore.gray_watch``) in one frame every this many
#: seconds of capture time, the first frame at once: a camera switches to night mode rarely,
#: and :func:`~edge.detect.levels.chroma_spread` costs 0.26-0.37 ms a frame (1280x720 to
#: 1920x1080, this host), 1-1.5 % of a core tick, on every frame before. A switch is seen
#: after 3 looks (``GrayWatch.switch_after``): 0.6 s.
GRAY_SAMPLE_S = 0.2


def build_detector(config: Config, manifest: Manifest, mode: RunMode
                   ) -> tuple[PersonDetector, str]:
    """The person detector and detection schedule the config asks for (``[detector]``).

    Args:
        config: The validated configuration.
        manifest: Models to use.
        mode: In image mode a tiled detector takes the whole frame and every tile of each image.

    Returns:
        A frame detector (tiled when ``detector.tiles`` is on) and its model's manifest key.
        The detector's precision is ``models.detector_precision`` or ``models.precision``;
        when that precision is not shipped for the box detector (its float file stays in the
        build cache) the shipped int8 one is used.

    Raises:
        edge.runtime.ModelError: When the detector model is missing or damaged.
    """
    mc, dc = config.models, config.detector
    precision: str = mc.detector_precision or mc.precision
    box: BoxPersonDetector | None = None
    pose: PoseDetector | None = None
    keys: list[str] = []
    if dc.kind in ("box", "both"):
        role = "box_detector"
        have = sorted(e.precision for e in manifest.models.values() if e.role == role)
        box_precision = precision if precision in have or not have else have[0]
        if box_precision != precision:
            logger.info("box detector: no %s build shipped, using %s", precision, box_precision)
        key = manifest.find(role, "nanodet", box_precision).key
        d = BoxDetectorConfig()
        min_score = STILL_MIN_SCORE if mode == "image" else d.min_score
        box = BoxPersonDetector(load_model(key, mc.threads, manifest), BoxDetectorConfig(
            min_score=min_score if dc.min_score is None else dc.min_score,
            nms_iou=d.nms_iou if dc.nms_iou is None else dc.nms_iou,
            roi_scale=d.roi_scale if dc.roi_scale is None else dc.roi_scale))
        keys.append(key)
    # Still images take the box detector alone under "both": BlazePose's detector on the whole
    # frame found nobody the box detector missed on the crowd stills (100 frames, recall the
    # same), and its face boxes on clutter gave 11 of 39 false persons; its turned region is
    # left to streams (a person mid-backflip), where the tracker follows it. A still on its
    # side (people lying: a camera on its side, a photo without its EXIF orientation) is found
    # by the box detector on the frame turned a quarter turn (TileConfig.still_turns).
    if dc.kind == "blazepose" or (dc.kind == "both" and mode != "image"):
        key = manifest.find("detector", None, precision).key
        bp = DecodeConfig()
        pose = PoseDetector(load_model(key, mc.threads, manifest), DecodeConfig(
            min_score=bp.min_score if dc.min_score is None or box else dc.min_score,
            nms_iou=bp.nms_iou if dc.nms_iou is None or box else dc.nms_iou,
            roi_scale=bp.roi_scale if dc.roi_scale is None or box else dc.roi_scale))
        keys.insert(0, key)
    tiled_by: PersonDetector
    if box is not None and pose is not None:
        detector: PersonDetector = CombinedDetector(pose, box)
        # Tiles take the box detector alone, in every mode: BlazePose's detector on a tile of a
        # crowd adds little (it boxes faces) and its large regions hid the small people around
        # (crowd stills, image mode: recall 40-80 / 80-160 px 0.40 / 0.58 with both on every
        # tile, 0.54 / 0.76 with the box detector alone).
        tiled_by = box
        input_px, merge_iou = box.config.input_size, box.config.nms_iou
    elif box is not None:
        detector = tiled_by = box
        input_px, merge_iou = box.config.input_size, box.config.nms_iou
    else:
        assert pose is not None
        detector = tiled_by = pose
        input_px, merge_iou = pose.config.input_size, pose.config.nms_iou
    if dc.tiles and dc.whole_every > 1:
        detector = TiledDetector(tiled_by, TileConfig(
            tile_px=dc.tile_px or input_px, overlap=dc.tile_overlap,
            per_run=0 if mode == "image" else dc.calls_per_run,
            whole_every=dc.whole_every, nms_iou=merge_iou,
            fine_px=round(FINE_TILES * (dc.tile_px or input_px)) if mode == "image" else 0,
            still_max_side=dc.still_max_side if mode == "image" else 0,
            still_turns=STILL_TURNS and mode == "image"),
            whole=detector if detector is not tiled_by else None,
            # A stream's run is one call of one model (issue 9: <= 25 ms a run at 1 thread;
            # both whole-frame detectors at once are 25.8 ms): NanoDet on the whole frame
            # every whole_every-th run as before, the other whole-frame views (BlazePose's
            # detector, NanoDet turned a quarter turn each way: stream_views) in every other
            # tile slot.
            stream=stream_views(box, pose),
            gray_watch=GrayWatch() if GRAY_STREAMS and box is not None and pose is not None
            and mode != "image" else None)
    key = "+".join(keys)
    return detector, key


def stream_views(box: BoxPersonDetector | None, pose: PoseDetector | None
                 ) -> tuple[Callable[[U8], Detections], ...]:
    """A stream's whole-frame views (``TiledDetector.stream``), none unless both detectors run.

    NanoDet (``stream[0]``, every ``whole_every``-th run), then the extra views that take every
    other tile slot in turn: BlazePose's detector, NanoDet on the frame turned a quarter turn
    counter-clockwise, BlazePose's detector again, NanoDet turned clockwise. Someone lying on
    the floor is boxed by neither detector upright; turned, NanoDet sees them standing, and
    their region is turned back with the view (:func:`turned_detections`), so the landmark
    model sees them upright too. An upright person boxed sideways in a turned view is not taken
    for someone new (``Tracker._sideways``). BlazePose's detector keeps half the extra slots.
    """
    if box is None or pose is None:
        return ()
    return (box, pose, functools.partial(turned_detections, box, k=1), pose,
            functools.partial(turned_detections, box, k=-1))


def build_pipeline(config: Config, *, timings: bool = True,
                   manifest: Manifest | None = None, mode: RunMode = "realtime") -> Pipeline:
    """Loads the models a config asks for and assembles detector and core.

    Args:
        config: The validated configuration.
        timings: Whether annotations carry timings (False in every-frame mode).
        manifest: Models to use; the config's ``models.dir`` or the shipped ones when None.
        mode: The run mode (:func:`resolve_mode`). An image core publishes people at once (no
            confirmation tick), does not smooth (there is no time between images) and takes
            up to ``tracking.max_persons_image`` people.

    Returns:
        The pipeline.

    Raises:
        edge.runtime.ModelError: When a model is missing, damaged or not in the manifest.
    """
    mc = config.models
    manifest = manifest if manifest is not None else load_manifest(mc.dir)
    lm_key = _landmark_key(manifest, mc.landmark, mc.precision)
    detector, det_key = build_detector(config, manifest, mode)
    landmarker = build_landmarker(lm_key, mc.threads, manifest, mc.landmark_parallel)
    lifter = _stage_3d(config, manifest)
    # One validated section: the tracker's own config is built from it, not copied by hand.
    tracker = Tracker(TrackerConfig(**{
        **config.tracking.model_dump(exclude={"max_persons_image"}),
        **({"confirm_ticks": 0, "max_persons": config.tracking.max_persons_image}
           if mode == "image" else {})}))
    sc = config.smoothing
    smoother = (PoseSmoother(OneEuroConfig(sc.min_cutoff_2d, sc.beta_2d, sc.d_cutoff),
                             OneEuroConfig(sc.min_cutoff_3d, sc.beta_3d, sc.d_cutoff))
                if sc.enabled and mode != "image" else None)
    core = PoseCore(landmarker, lifter, tracker, smoother,
                    device_id=config.annotation.device_id,
                    models={"detector": det_key, "pose2d": lm_key, "pose3d": lifter.name},
                    joints=config.annotation.joints,
                    min_visibility=config.annotation.min_visibility, timings=timings,
                    still=mode == "image", early=mode == "realtime",
                    levels=LEVELS if mode == "image" else None,
                    gray_watch=GrayWatch() if mode != "image" else None)
    return Pipeline(config, detector, core, manifest, mode)
