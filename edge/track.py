"""Multi-person tracking: region propagation from poses, Hungarian matching of detections, ID pool.

Top-down after fastpose: the detector runs in the background and only *finds* people; between its
runs each person's next region comes from their own pose (``Poses2D.next_regions``). Pure math:
numpy and scipy, no I/O, no clocks (timestamps are passed in, monotonic seconds).

One tick of the scheduler::

    tracks = tracker.tracks()                  # regions to crop (snapshot remembered)
    poses = pose2d(frame, tracks.regions)      # rows in the order of tracks.ids
    events = tracker.update(poses, t)          # drop / propagate / merge
    ...
    events = tracker.add_detections(dets, t_det)   # whenever the detector thread delivers

Choices, and why (the thresholds themselves live in :class:`TrackerConfig`):

* **Detections never move a track.** A matched detection only counts a hit; the region keeps
  coming from the pose, which is newer and finer than the detector's. So a wrong match can at
  worst hide a new person for one detector run, never make a track jump to someone else.
* **Matching cost = 1 - IoU** of the axis-aligned boxes of the rotated regions, solved with
  ``scipy.optimize.linear_sum_assignment``. Both sides always have a region (a track that has not
  had a pose yet has none of the 33 landmarks, and the detector gives only 4 points), and
  BlazePose's detector and landmark ROIs are built the same way (centre on the mid-hip, side from
  the body's extent), so region IoU is the comparable quantity. Two *gates* must both pass:
  IoU >= ``match_iou`` and the centre distance normalised by the region size <=
  ``match_center_dist``. The second gate is what separates two people standing side by side:
  BlazePose regions are squares about 2.5x the hip-to-head distance, so neighbours' regions
  overlap with IoU ~0.6, but their centres (mid-hips) are >= ~0.2 of a side apart.
* **Detections come from an older frame.** Each track keeps a short history of its regions;
  a detection stamped ``t_det`` is compared with each track's region at ``t_det``, not with the
  newest one, so fast movers are not mistaken for new people.
* **Merging uses keypoints.** Region IoU alone would merge two people hugging. Two tracks are
  merged when their regions overlap (IoU >= ``merge_iou``) *and* their landmarks agree (an
  OKS-like similarity >= ``merge_similarity``); the older track keeps its ID.
* **ID pool** (fastpose's "further improvement" 1): a lost ID is pushed on a stack with the time
  and region where it was lost; a new track takes, within ``id_reuse_window_s``, the most
  recently lost ID whose last region matches the detection (same gates), else the most recently
  lost ID; after the window, a fresh ID from a per-tracker counter. IDs merged away are pooled
  too: the usual cause is a person occluded by another, whose region then slid onto the other,
  and who should get the ID back when seen again.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from edge.geometry import box_iou
from edge.skeleton import BLAZEPOSE_FLIP
from edge.types import F32, I64, Detections, Poses2D, _check, _frozen, _n

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
EventKind = Literal["entered", "left", "merged", "reassigned"]

# Finite stand-in for "forbidden" in the assignment matrix (scipy rejects all-inf rows).
_FORBIDDEN = 1e6


@dataclass(frozen=True)
class TrackerConfig:
    """Every threshold of the tracker.

    Attributes:
        max_persons: Most people tracked at once (slots); extra detections are counted, not
            tracked.
        min_presence: A track is dropped when its pose presence is below this, in [0, 1].
        match_iou: Gate: a detection matches a track only if the IoU of their regions' boxes is
            at least this, in (0, 1].
        match_center_dist: Gate: ... and if their centres are at most this far apart, as a
            fraction of the track region's size ``sqrt(w * h)``.
        merge_iou: Two tracks are merge candidates when their regions' boxes overlap by at
            least this (intersection over the smaller box).
        merge_similarity: ... and merged when their keypoint similarity is at least this.
        similarity_kappa: Keypoint similarity falloff: a joint pair ``d`` px apart scores
            ``exp(-d^2 / (2 (kappa * s)^2))`` with ``s = sqrt(w * h)`` of the regions (like
            COCO's OKS constant).
        id_reuse_window_s: A lost ID may be reused for this many seconds after the loss.
        max_detection_age_s: Detections older than the newest ``update`` by more than this are
            ignored (counted as stale); also how long the region history is kept.
        confirm_ticks: A track is published once it has survived this many updates after its
            first (``Tracks.age > confirm_ticks``); 0 publishes at once (still images). The ID
            of a track that ends before that (a duplicate detection merged away, a false
            detection) was never seen by anyone, so it is returned as unused rather than pooled
            as a lost person's.
        min_box_fit: A track made from a whole-body detection box is kept after its first pose
            only if that box and the box of the pose's landmarks overlap by IoU >= this
            (``PoseCore`` checks; 0 keeps every one). The landmark model finds a "pose" in most
            crops, even of a lamp post or of a part of someone; its landmarks then rarely span
            the box the detector drew around a person. Measured on the crowd stills (box
            detector, 100 frames): people found 0.52 / 0.63 / 0.74 (10th / 25th / 50th
            percentile), false persons 0.26 / 0.34 / 0.41 (25th / 50th / 75th); at 0.4, 403 of
            410 people kept and 10 of 36 false persons.
    """

    max_persons: int = 6
    min_presence: float = 0.5
    match_iou: float = 0.5
    match_center_dist: float = 0.15
    merge_iou: float = 0.5
    merge_similarity: float = 0.5
    similarity_kappa: float = 0.1
    id_reuse_window_s: float = 5.0
    max_detection_age_s: float = 1.0
    confirm_ticks: int = 1
    min_box_fit: float = 0.4

    def __post_init__(self) -> None:
        if self.confirm_ticks < 0:
            raise ValueError(f"TrackerConfig.confirm_ticks must be >= 0, got {self.confirm_ticks}")
        if self.max_persons < 1:
            raise ValueError(f"TrackerConfig.max_persons must be >= 1, got {self.max_persons}")
        for name in ("min_presence", "merge_similarity", "min_box_fit"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"TrackerConfig.{name} must be in [0, 1], got {v}")
        for name in ("match_iou", "merge_iou"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"TrackerConfig.{name} must be in (0, 1], got {v}")
        for name in ("match_center_dist", "similarity_kappa"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0.0):
                raise ValueError(f"TrackerConfig.{name} must be > 0, got {v}")
        for name in ("id_reuse_window_s", "max_detection_age_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0.0):
                raise ValueError(f"TrackerConfig.{name} must be >= 0 seconds, got {v}")


@dataclass(frozen=True)
class TrackEvent:
    """Something that happened to a track, for the events topic.

    Attributes:
        kind: ``entered`` (new track, fresh ID), ``reassigned`` (new track re-using a recently
            lost ID, usually the same person coming back), ``left`` (dropped: low presence or
            invalid region), ``merged`` (duplicate of ``other_id``, dropped).
        track_id: The track's ID.
        t: Timestamp, monotonic seconds (of the detection for entered / reassigned, of the
            update otherwise).
        other_id: For ``merged``, the ID that was kept; else None.
    """

    kind: EventKind
    track_id: int
    t: float
    other_id: int | None = None


@dataclass(frozen=True, eq=False)
class Tracks:
    """The tracked people, one row each, in creation order.

    Attributes:
        ids: (n,) int64, unique track IDs (small integers from 1).
        regions: (n, 5) float32, region to crop next: ``cx, cy, w, h`` px, rotation rad.
        age: (n,) int64, ``update`` ticks since the track was created.
        hits: (n,) int64, detections matched to the track (its creating detection counts).
        first_seen: (n,) float64, monotonic seconds of the detection that created the track.
        boxes: (n, 4) float32, ``x1, y1, x2, y2`` px: the whole-body box of the detection that
            created the track, NaN when it had none (BlazePose's detector boxes a face).
        last_seen: (n,) float64, monotonic seconds of the last pose with enough presence (the
            creating detection's time before any pose).
    """

    ids: I64
    regions: F32
    age: I64
    hits: I64
    first_seen: F64
    last_seen: F64
    boxes: F32

    def __post_init__(self) -> None:
        _check("Tracks.ids", self.ids, (None,), np.int64)
        _check("Tracks.boxes", self.boxes, (None, 4), np.float32)
        _check("Tracks.regions", self.regions, (None, 5), np.float32)
        _check("Tracks.age", self.age, (None,), np.int64)
        _check("Tracks.hits", self.hits, (None,), np.int64)
        _check("Tracks.first_seen", self.first_seen, (None,), np.float64)
        _check("Tracks.last_seen", self.last_seen, (None,), np.float64)
        _n(self.ids, self.regions, self.age, self.hits, self.first_seen, self.last_seen,
           self.boxes)
        if np.unique(self.ids).shape[0] != self.ids.shape[0]:
            raise ValueError(f"Tracks.ids must be unique, got {self.ids.tolist()}")
        _frozen(self.ids, self.regions, self.age, self.hits, self.first_seen, self.last_seen,
                self.boxes)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def empty(cls) -> Tracks:
        """No tracks."""
        z = np.zeros
        return cls(z((0,), np.int64), z((0, 5), np.float32), z((0,), np.int64),
                   z((0,), np.int64), z((0,), np.float64), z((0,), np.float64),
                   z((0, 4), np.float32))

    def __getitem__(self, idx: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice) -> Tracks:
        """Selects tracks by boolean mask, index array or slice (returns a new object)."""
        return Tracks(self.ids[idx].copy(), self.regions[idx].copy(), self.age[idx].copy(),
                      self.hits[idx].copy(), self.first_seen[idx].copy(),
                      self.last_seen[idx].copy(), self.boxes[idx].copy())


@dataclass(frozen=True)
class TrackerStats:
    """Counters since construction or ``reset()``.

    Attributes:
        entered: Tracks created with a fresh ID.
        reassigned: Tracks created with a re-used ID.
        left: Tracks dropped for low presence or an invalid region.
        merged: Tracks dropped as duplicates of an older one (their IDs are pooled).
        matched: Detections matched to an existing track (no new track).
        slots_full: Unmatched detections not tracked because ``max_persons`` were tracked.
        stale: ``add_detections`` calls ignored as older than ``max_detection_age_s``.
        superseded: Unmatched detections of a person whose track was dropped *after* the
            detection's frame (the pose said "gone" more recently than the detector said "here").
        duplicates: Unmatched detections at least twice a track's size, centred on it and
            holding it: that person seen coarser, not tracked.
    """

    entered: int = 0
    reassigned: int = 0
    left: int = 0
    merged: int = 0
    matched: int = 0
    slots_full: int = 0
    stale: int = 0
    superseded: int = 0
    duplicates: int = 0


def region_boxes(regions: F32) -> F32:
    """Axis-aligned bounding boxes of rotated regions.

    Args:
        regions: (n, 5) float32, ``cx, cy, w, h`` px, rotation rad.

    Returns:
        (n, 4) float32, ``x1, y1, x2, y2`` px.
    """
    r = regions.astype(np.float64)
    c, s = np.abs(np.cos(r[:, 4])), np.abs(np.sin(r[:, 4]))
    hx = 0.5 * (r[:, 2] * c + r[:, 3] * s)
    hy = 0.5 * (r[:, 2] * s + r[:, 3] * c)
    out = np.stack([r[:, 0] - hx, r[:, 1] - hy, r[:, 0] + hx, r[:, 1] + hy], axis=1)
    return out.astype(np.float32)


def region_sides(regions: F32) -> F64:
    """The size of regions: the side of the square of the same area.

    Args:
        regions: (..., 5) float32, ``cx, cy, w, h`` px, rotation rad (one region or many).

    Returns:
        (...) float64, ``sqrt(w * h)`` px; 0 for a region without area.
    """
    r = np.asarray(regions, np.float64)
    return np.sqrt(np.clip(r[..., 2] * r[..., 3], 0.0, None))


def _sides_since(history: list[tuple[float, F32]], since: float, region: F32) -> F64:
    """Sizes of a track's regions from a time on, and of one more region.

    Args:
        history: ``(time, region)`` pairs, monotonic s and (5,) float32 px / rad.
        since: Regions of ``history`` at or after this time count, monotonic s.
        region: (5,) float32, also counted (the track's current region).

    Returns:
        (m + 1,) float64 px (:func:`region_sides`).
    """
    return region_sides(np.array([r for ti, r in history if ti >= since] + [region]))


def center_distance(a: F32, b: F32) -> F64:
    """Pairwise distance of region centres, as a fraction of the size of ``b``'s regions.

    Args:
        a: (n, 5) regions px / rad.
        b: (m, 5) regions px / rad; ``sqrt(w * h)`` of these normalises.

    Returns:
        (n, m) float64, dimensionless; inf where a ``b`` region has no area.
    """
    d = np.linalg.norm(a[:, None, :2].astype(np.float64) - b[None, :, :2].astype(np.float64),
                       axis=2)
    size = region_sides(b)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(size > 0.0, d / size, np.inf)
    return np.nan_to_num(out, nan=np.inf)


def whole_body_boxes(detections: Detections) -> F32:
    """The detections' boxes that bound a whole body, NaN for the others.

    A box detector's box bounds the person and its region is an upright square centred on it
    (side 1.5 x the box's long side); BlazePose's detector boxes the face and centres its
    region, turned with the body, on the hips. So a box is taken as a whole-body box when its
    region is upright and centred on it.

    Args:
        detections: Detections in frame px.

    Returns:
        (n, 4) float32 ``x1, y1, x2, y2`` px, rows of NaN where the box is not a body's.
    """
    b, r = detections.boxes, detections.regions
    side = region_sides(r)
    off = np.hypot((b[:, 0] + b[:, 2]) / 2 - r[:, 0], (b[:, 1] + b[:, 3]) / 2 - r[:, 1])
    body = (r[:, 4] == 0.0) & (off <= 0.01 * side)
    return np.where(body[:, None], b, np.float32(np.nan)).astype(np.float32)


def box_fit(boxes: F32, keypoints: F32, frame_wh: tuple[float, float]) -> F64:
    """IoU of each detection box with the box of its pose's landmarks (clipped to the frame).

    Args:
        boxes: (n, 4) float32 ``x1, y1, x2, y2`` px (detector boxes are clipped to the frame).
        keypoints: (n, J, 2) float32 landmarks px, every one (seen or not: the body as the
            model places it).
        frame_wh: Frame width and height, px (inf: no clipping).

    Returns:
        (n,) float64 IoU in [0, 1]; NaN where the box is NaN.
    """
    w, h = frame_wh
    kb = np.concatenate([keypoints.min(axis=1), keypoints.max(axis=1)], axis=1)
    kb = np.clip(kb, 0.0, np.array([w, h, w, h], np.float32)).astype(np.float32)
    out = np.full(len(boxes), np.nan)
    ok = np.isfinite(boxes).all(axis=1)
    for i in np.flatnonzero(ok):
        out[i] = box_iou(boxes[i:i + 1], kb[i:i + 1])[0, 0]
    return out


def keypoint_similarity(kp_a: F32, vis_a: F32, kp_b: F32, vis_b: F32, scale: float,
                        kappa: float) -> float:
    """OKS-like similarity of two poses of the same joint set.

    Args:
        kp_a: (J, 2) keypoints px.
        vis_a: (J,) visibility in [0, 1].
        kp_b: (J, 2) keypoints px.
        vis_b: (J,) visibility in [0, 1].
        scale: Person size px (``sqrt(w * h)`` of the region).
        kappa: Falloff as a fraction of ``scale``.

    Returns:
        Visibility-weighted mean of ``exp(-d^2 / (2 (kappa * scale)^2))`` over joints, in [0, 1]
        (uniform weights if no joint is visible in both; 0 if nothing is finite).
    """
    d2 = np.sum((kp_a.astype(np.float64) - kp_b.astype(np.float64)) ** 2, axis=1)
    w = np.clip(np.nan_to_num(vis_a.astype(np.float64) * vis_b, nan=0.0), 0.0, 1.0)
    ok = np.isfinite(d2)
    if not ok.any() or scale <= 0.0:
        return 0.0
    w = np.where(ok, w, 0.0)
    if w.sum() <= 1e-6:
        w = ok.astype(np.float64)
    k = np.exp(-np.where(ok, d2, 0.0) / (2.0 * (kappa * scale) ** 2))
    return float(np.sum(w * k) / np.sum(w))


def _valid_region(r: F32) -> bool:
    return bool(np.all(np.isfinite(r)) and r[2] > 0.0 and r[3] > 0.0)


@dataclass
class _Track:
    """Mutable per-track state, private to the tracker (published as :class:`Tracks`)."""

    id: int
    region: F32
    first_seen: float
    last_seen: float
    age: int = 0
    hits: int = 1
    # (t, region) newest last, for comparing with detections from older frames.
    history: list[tuple[float, F32]] = field(default_factory=list)
    # The pose of the last update, for merging (None until the first pose).
    keypoints: F32 | None = None
    visibility: F32 | None = None
    # The lost person whose ID this track took, returned to the pool if it ends unpublished.
    reused: _Lost | None = None
    # The whole-body box of the creating detection, NaN if it had none.
    box: F32 = field(default_factory=lambda: np.full(4, np.nan, np.float32))
    # Smallest and largest region side (px) of this person so far, with those of the lost
    # track whose ID it took.
    sides: tuple[float, float] = (0.0, 0.0)
    # Published: confirmed early (:meth:`Tracker.confirm`) or shown (:meth:`Tracker.shown`).
    confirmed: bool = False
    # Held back by :meth:`Tracker.shown` past its confirmation ticks (never published yet).
    held: bool = False
    # Pose lost, kept hidden at its last region (:meth:`Tracker.update`'s ``coast``).
    coasting: bool = False
    # Its first pose fitted the whole-body box of its detection (``min_box_fit``).
    fitted: bool = False

    def grow(self, region: F32) -> None:
        """Widens :attr:`sides` by a region's side."""
        side = float(region_sides(region))
        lo, hi = self.sides
        self.sides = (side, side) if hi <= 0.0 else (min(lo, side), max(hi, side))

    def region_at(self, t: float) -> F32:
        """The region at time ``t``: the newest entry not after ``t``, else the oldest."""
        for ti, r in reversed(self.history):
            if ti <= t:
                return r
        return self.history[0][1] if self.history else self.region


@dataclass(frozen=True)
class _Lost:
    """A pooled ID: when it was lost and its track's regions up to then."""

    id: int
    t: float
    track: _Track


class Tracker:
    """Tracks up to ``max_persons`` people between detector runs (see the module docstring).

    Not thread-safe: one thread (the scheduler's core) owns it.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        """Creates an empty tracker.

        Args:
            config: Thresholds; defaults to ``TrackerConfig()``.
        """
        self.config = config if config is not None else TrackerConfig()
        self.reset()

    def set_max_persons(self, n: int) -> None:
        """Changes the number of slots (a run-time command).

        Current tracks above the new number are kept until they leave; no new ones are opened
        meanwhile.

        Raises:
            ValueError: When ``n`` < 1.
        """
        self.config = replace(self.config, max_persons=n)

    def reset(self) -> None:
        """Forgets all tracks, the ID pool, the ID counter, the clocks and the counters."""
        self._tracks: list[_Track] = []
        self._pool: list[_Lost] = []  # a stack: most recently lost last
        self._unused: list[int] = []  # IDs of tracks never published, smallest first
        self._next_id = 1
        self._t_update: float | None = None
        self._t_detect: float | None = None
        self._snapshot: list[int] | None = None
        self._stats = TrackerStats()

    @property
    def stats(self) -> TrackerStats:
        """Counters since construction or the last ``reset()``."""
        return self._stats

    def tracks(self) -> Tracks:
        """The current tracks; remembers their IDs as the rows ``update`` will receive.

        Returns:
            A new :class:`Tracks` (rows in creation order).
        """
        self._snapshot = [tr.id for tr in self._tracks]
        return self._publish()

    def _publish(self) -> Tracks:
        trs = self._tracks
        regions = (np.stack([tr.region for tr in trs]).astype(np.float32) if trs
                   else np.zeros((0, 5), np.float32))
        return Tracks(np.array([tr.id for tr in trs], np.int64), regions,
                      np.array([tr.age for tr in trs], np.int64),
                      np.array([tr.hits for tr in trs], np.int64),
                      np.array([tr.first_seen for tr in trs], np.float64),
                      np.array([tr.last_seen for tr in trs], np.float64),
                      np.array([tr.box for tr in trs], np.float32).reshape(-1, 4))

    def recent_sides(self) -> F64:
        """The largest region side (px) each track had a moment ago, in creation order.

        Over its regions of the last ``max_detection_age_s`` before its newest, with those of
        the lost track whose ID it took (lost within that time); for
        :class:`~edge.pipeline.PoseCore` to tell a body that shrank on the frame's edge
        (someone's last arm as they walk out).

        Returns:
            (n,) float64, one per track of :meth:`tracks`.
        """
        horizon = self.config.max_detection_age_s
        out = np.zeros(len(self._tracks), np.float64)
        for k, tr in enumerate(self._tracks):
            entries = list(tr.history)
            if tr.reused is not None:
                entries += tr.reused.track.history
            newest = max((ti for ti, _ in tr.history), default=tr.last_seen)
            out[k] = _sides_since(entries, newest - horizon, tr.region).max()
        return out

    def smallest_sides(self, t: float, min_age_s: float) -> F64:
        """The smallest region side (px) each track had in the last ``max_detection_age_s``.

        Over its own regions since ``t - max_detection_age_s`` and its current one, leaving out
        those of its first ``min_age_s`` (a track's first regions may hold only a part of its
        person: crowd clip00, a walker's region grew 116 -> 168 px in 0.5 s); inf for a track
        found less than ``min_age_s`` ago. For :class:`~edge.pipeline.PoseCore` to tell a body
        stretched over two people.

        Args:
            t: Now, monotonic seconds (the frame being posed).
            min_age_s: A track's first seconds left out (inf while it is younger).

        Returns:
            (n,) float64, one per track of :meth:`tracks`.
        """
        horizon = t - self.config.max_detection_age_s
        out = np.full(len(self._tracks), np.inf)
        for k, tr in enumerate(self._tracks):
            if t - tr.first_seen < min_age_s:
                continue
            since = max(horizon, tr.first_seen + min_age_s)
            out[k] = _sides_since(tr.history, since, tr.region).min()
        return out

    def confirm(self, ids: I64) -> None:
        """Publishes the tracks of ``ids`` before their confirmation ticks are over.

        For a caller that has checked their first pose already (``PoseCore``: it fits the
        whole-body box it was found in, and a refinement agrees with it). IDs no longer
        tracked are ignored, and so is a track whose region overlaps another track's by at
        least ``merge_iou`` (of the smaller): it waits for its ticks. A confirmed track's ID
        is pooled when it ends, as a published one's.

        Args:
            ids: (n,) int64 track IDs.
        """
        want = {int(i) for i in ids}
        rows = [k for k, tr in enumerate(self._tracks) if tr.id in want]
        if not rows:
            return
        regions = region_boxes(np.stack([tr.region for tr in self._tracks]).astype(np.float32))
        overlap = box_iou(regions, regions, over="smaller")
        for k in rows:
            # A newcomer on someone tracked (a duplicate, a part of them, a neighbour's
            # region caught) is a merge candidate (``merge_iou``) that the keypoints may tell
            # only on a later tick, once the two regions have settled: it waits for its
            # confirmation ticks. (Demo replays: a second track on the man crouching after
            # his backflip, and one on his upper body, were published for 1-3 frames.)
            others = [j for j in range(len(self._tracks)) if j != k]
            if others and float(overlap[k, others].max()) >= self.config.merge_iou:
                continue
            self._tracks[k].confirmed = True

    #: :meth:`shown` with ``hold``: a track past its confirmation ticks whose region is a
    #: likely duplicate of an older published track's (:meth:`_likely_duplicates`) is held
    #: back up to this long (s) after its detection. Most such tracks are a second track on
    #: that person, merged a tick or two later. 0.5, not 0.3: on a loaded host a detection
    #: arrives 0.1-0.25 s after its frame and the confirmation tick comes 1-2 ticks later, so
    #: 0.3 s had often run out (demo replays, seeds 9 and 10: a second track on the man after
    #: his landing published at frames 214-216). Crowd clips 00-03, realtime replays of seeds
    #: 0-1: ID switches 6 -> 5, IDF1 76.4 -> 76.2 % (mean of 8).
    HOLD_S = 0.5

    def shown(self, tracks: Tracks, hold: bool = False) -> npt.NDArray[np.bool_]:
        """Which rows of ``tracks`` (a snapshot of this tracker) are published.

        A track is published once it was confirmed early (:meth:`confirm`), or has survived
        ``confirm_ticks`` updates after its first; with ``hold``, only if it is also not a
        likely duplicate of an older published track, or older than :data:`HOLD_S`. Once
        published it stays so.

        Realtime mode holds (``PoseCore``): its ticks are 2-5 frames apart, so a duplicate
        published after its confirmation tick was seen for 2-10 frames before the merge
        (demo replays, seeds 0-15: a third ID in 3 of 16 seeds). Every-frame mode does not:
        there a duplicate shows for a frame or two, and holding delayed walkers who cross
        (crowd clip00, every frame: IDF1 85.1 -> 83.1 %).

        Args:
            tracks: Rows to check (from :meth:`tracks`).
            hold: Hold likely duplicates back.

        Returns:
            (n,) bool, one per row.
        """
        t = self._t_update if self._t_update is not None else 0.0
        by_id = {tr.id: k for k, tr in enumerate(self._tracks)}
        dup = self._likely_duplicates() if hold else None
        out = np.zeros(len(tracks), bool)
        for r, (tid, age) in enumerate(zip(tracks.ids.tolist(), tracks.age.tolist(),
                                           strict=True)):
            k = by_id.get(int(tid))
            if k is None:
                continue
            tr = self._tracks[k]
            if not tr.confirmed and age > self.config.confirm_ticks:
                held = dup is not None and t - tr.first_seen <= self.HOLD_S and any(
                    self._tracks[j].confirmed and dup[k, j] for j in range(k))
                tr.confirmed, tr.held = not held, held
            out[r] = tr.confirmed
        return out

    def _likely_duplicates(self) -> npt.NDArray[np.bool_]:
        """Which tracks' regions are likely duplicates of which.

        Returns:
            (n, n) bool: True where track i's region is centred within :data:`DUP_CENTRE` of
            track j's size and is 0.5-2x its size (as in ``add_detections``).
        """
        if not self._tracks:
            return np.zeros((0, 0), bool)
        r = np.stack([tr.region for tr in self._tracks]).astype(np.float32)
        side = region_sides(r)
        ratio = side[:, None] / np.maximum(side[None, :], 1e-9)
        return np.asarray((center_distance(r, r) <= self.DUP_CENTRE)
                          & (ratio >= 0.5) & (ratio <= 2.0))

    def _count(self, **inc: int) -> None:
        self._stats = replace(self._stats, **{k: getattr(self._stats, k) + v
                                              for k, v in inc.items()})

    # ------------------------------------------------------------------ update (every tick)

    #: :meth:`update` with ``coast``: a published track whose pose is lost is kept, hidden,
    #: at its last region for up to this long (s) after its last pose, and tried again.
    COAST_S = 0.3

    def update(self, poses: Poses2D | None, t: float, ids: I64 | None = None,
               coast: npt.NDArray[np.bool_] | None = None,
               min_presence: float | None = None) -> list[TrackEvent]:
        """Applies one tick of 2D poses: drops absent people, propagates regions, merges twins.

        Args:
            poses: The poses of the regions of ``ids`` (row i belongs to ``ids[i]``), or None /
                empty when no pose ran this tick (regions are then kept as they are).
            t: Capture time of the frame the poses come from, monotonic seconds, not before the
                previous ``update``.
            ids: (n,) int64, the track of each pose row; default: the IDs of the last
                ``tracks()`` call (the snapshot the poses were computed on). Rows whose track has
                gone meanwhile are ignored; tracks created meanwhile are left untouched.
            coast: (n,) bool, rows whose track, if published, is kept when its pose is lost
                (:data:`COAST_S`): not posed this tick, its region left where it was. Back
                with a pose that duplicates another posed track's (:meth:`_likely_duplicates`),
                it ends: its region slid onto someone else.
            min_presence: This tick's presence threshold in place of
                ``config.min_presence`` (a gray stream's lower one:
                ``edge.pipeline.GRAY_PRESENCE``); None: the configured one.

        Returns:
            Events in order: ``left`` (in track order), then ``merged``.

        Raises:
            ValueError: ``t`` is before the previous update's, or the number of pose rows does
                not match ``ids``.
        """
        if min_presence is not None and not 0.0 <= min_presence <= 1.0:
            raise ValueError(f"Tracker.update: min_presence must be in [0, 1], got {min_presence}")
        t = self._check_time(t, self._t_update, "update")
        self._t_update = t
        cfg = self.config
        threshold = cfg.min_presence if min_presence is None else min_presence
        events: list[TrackEvent] = []
        row_ids = self._row_ids(poses, ids)
        by_id = {tr.id: tr for tr in self._tracks}
        posed: set[int] = set()
        dropped: set[int] = set()
        newly: set[int] = set()  # tracks whose pose was lost this tick (coasting from now)
        if poses is not None and row_ids:
            presence = poses.presence.astype(np.float64)
            for row, tid in enumerate(row_ids):
                tr = by_id.get(tid)
                if tr is None:
                    continue
                nxt = poses.next_regions[row]
                if not (presence[row] >= threshold and _valid_region(nxt)):
                    if (coast is not None and bool(coast[row]) and tr.confirmed
                            and t - tr.last_seen <= self.COAST_S):
                        if not tr.coasting:
                            newly.add(tid)
                        tr.coasting = True
                        continue
                    dropped.add(tid)
                    continue
                tr.region = nxt.copy()
                tr.grow(tr.region)
                tr.last_seen = t
                if tr.keypoints is None:  # its first pose
                    tr.fitted = self._fits_box(tr, poses.keypoints[row])
                tr.keypoints = poses.keypoints[row].copy()
                tr.visibility = poses.visibility[row].copy()
                posed.add(tid)
        back = [k for k, tr in enumerate(self._tracks) if tr.id in posed and tr.coasting]
        if back:
            dup = self._likely_duplicates()
            for k in back:
                self._tracks[k].coasting = False
                if any(dup[k, j] or dup[j, k] for j, tr in enumerate(self._tracks)
                       if j != k and tr.id in posed):
                    dropped.add(self._tracks[k].id)
                    posed.discard(self._tracks[k].id)
        # A published person lost this tick while a newcomer near them, not yet published, has
        # a pose: the detector found them in a posture their region no longer matched (a
        # backflip's landing), just before the landmarks lost them. The old track ends now, so
        # the hand-over below gives the newcomer their ID instead of a fresh one.
        if newly:
            fresh = [tr.region for tr in self._tracks
                     if tr.id in posed and not tr.confirmed and tr.reused is None
                     and tr.age <= cfg.confirm_ticks]
            dropped |= {tr.id for tr in self._tracks if tr.id in newly
                        and any(self._near(tr, region, t - tr.last_seen) for region in fresh)}
        for tr in self._tracks:
            if tr.id in dropped:
                events.append(TrackEvent("left", tr.id, t))
                self._release(tr, t)
        self._tracks = [tr for tr in self._tracks if tr.id not in dropped]
        self._count(left=len(dropped))
        events += self._merge(posed, t)
        if dropped:
            events += self._hand_over(posed, t)
        horizon = t - cfg.max_detection_age_s
        for tr in self._tracks:
            tr.age += 1
            if tr.id in posed:
                tr.history.append((t, tr.region))
            # Keep the newest entry at or before the horizon: it is the region at that time.
            while len(tr.history) > 1 and tr.history[1][0] <= horizon:
                tr.history.pop(0)
        self._pool = [p for p in self._pool if t - p.t <= cfg.id_reuse_window_s]
        self._snapshot = None
        return events

    def _hand_over(self, posed: set[int], t: float) -> list[TrackEvent]:
        """Gives a newcomer the ID of a person lost in this same tick, where it is.

        A person whose region the landmarks lose (a backflip) is often found again by the
        detector in the very tick their old track is dropped: the new track was made, with a
        fresh ID, before the old one left. Such a newcomer (made this tick, its ID fresh, not
        yet published) takes the pooled ID by the rules of :meth:`_reuse`, and its fresh ID is
        returned unused. Emits ``merged`` (the fresh ID into the pooled one) and ``reassigned``.
        """
        events: list[TrackEvent] = []
        for tr in self._tracks:
            if (tr.confirmed or tr.age > self.config.confirm_ticks or tr.reused is not None
                    or tr.id not in posed):
                continue
            lost = self._reuse(tr.region, t)
            if lost is None:
                continue
            events.append(TrackEvent("merged", tr.id, t, other_id=lost.id))
            events.append(TrackEvent("reassigned", lost.id, t))
            self._count(reassigned=1, entered=-1)
            bisect.insort(self._unused, tr.id)
            tr.id, tr.reused = lost.id, lost
            tr.sides = (min(tr.sides[0], lost.track.sides[0]),
                        max(tr.sides[1], lost.track.sides[1]))
        return events

    def _row_ids(self, poses: Poses2D | None, ids: I64 | None) -> list[int]:
        if ids is not None:
            _check("ids", ids, (None,), np.int64)
            row_ids = [int(i) for i in ids]
        elif self._snapshot is not None:
            row_ids = list(self._snapshot)
        else:
            row_ids = [tr.id for tr in self._tracks]
        if poses is None or len(poses) == 0:
            return []
        if len(poses) != len(row_ids):
            raise ValueError(f"update: {len(poses)} pose rows for {len(row_ids)} tracks "
                             f"{row_ids}; pass the poses of the regions from tracks()")
        return row_ids

    #: A track whose body box is at least this much inside another's and whose body is at
    #: most :data:`PART_HEIGHT` of the other's height, and of the other's length (the longer
    #: side of the landmarks' box), is a part of that person.
    PART_INSIDE = 0.6
    PART_HEIGHT = 0.6
    #: The body box is widened by this share of its height on every side (a hand beyond the
    #: wrist, hair above the eyes are parts of the body the landmarks do not bound).
    PART_MARGIN = 0.3

    def _parts(self, cand: list[_Track]) -> list[tuple[float, int, int]]:
        """``(score, whole, part)`` pairs: a track that is a body part of another person.

        A detector sometimes takes a hand, an arm or a head for a person; the landmark model
        then "finds" a small pose there, which keypoint similarity cannot tell from a second
        person. Such a pose is centred within the real person's body box (the box of their
        landmarks, widened by :data:`PART_MARGIN` of its height), lies mostly inside it and is
        much shorter, both in height and in length (the longer side of its landmarks' box).
        Height alone took someone lying on the floor at a standing person's feet (a fall, a
        helper beside) for that person's part: lying, they are short. Length alone measured a
        pose spread over a group (arms on the neighbours, crowd clip01: 487x279 px) by its
        width, and took a real person of the group for its part. Every part the height rule
        found on the demo clip and crowd clips 00-01 (9) is at most 0.595 of its whole's
        length. Someone standing behind a person is rarely centred on their body. Only a
        newer track can be a part of an older one: an established person is never dropped for
        a newcomer whose pose spans them.

        A newcomer whose first landmarks fitted its whole-body detection box (:func:`box_fit`
        >= :attr:`TrackerConfig.min_box_fit`, ``_Track.fitted``) is a person, not a part: in a
        crowd a far person often stands inside a near one's widened body box (crowd stills:
        the rule without that exception dropped 9 % of the people of 40-160 px). Streams too
        (it was for people found together only, a still image's): a far person walking beside
        a near one was merged away as their hand a few frames after being found (crowd clips,
        every frame, seeds 0-3 / held-out 4-7: recall of 40-80 px people 0.329 -> 0.411 /
        0.240 -> 0.424, IDF1 0.696 -> 0.724 / 0.701 -> 0.781, precision 0.939 -> 0.936 /
        0.951 -> 0.948; the demo clip unchanged). The fit is taken at the first pose, where
        the box was found: a walker soon leaves the box of a detection from a second ago.
        """
        boxes: list[F32 | None] = []
        lengths: list[float] = []
        for tr in cand:
            if tr.keypoints is None or tr.visibility is None:
                boxes.append(None)
                lengths.append(0.0)
                continue
            # Every landmark, seen or not: the body as the model places it (a backlit person
            # has few landmarks seen, and must not look small for it).
            lo, hi = tr.keypoints.min(0), tr.keypoints.max(0)
            lengths.append(float((hi - lo).max()))  # standing: the height; lying: the width
            pad = Tracker.PART_MARGIN * float(hi[1] - lo[1])  # hair, hands beyond the wrists
            boxes.append(np.array([lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad],
                                  np.float32))
        out: list[tuple[float, int, int]] = []
        for i, bi in enumerate(boxes):
            for j, bj in enumerate(boxes[i + 1:], start=i + 1):  # only a newer track is a part
                if bi is None or bj is None:
                    continue
                if cand[j].fitted:  # a person in the box they were found in
                    continue
                hi, hj = float(bi[3] - bi[1]), float(bj[3] - bj[1])
                if hi <= 0 or hj > Tracker.PART_HEIGHT * hi:
                    continue
                if lengths[j] > Tracker.PART_HEIGHT * lengths[i]:  # someone lying: not short
                    continue
                cx, cy = (bj[0] + bj[2]) / 2, (bj[1] + bj[3]) / 2
                if not (bi[0] <= cx <= bi[2] and bi[1] <= cy <= bi[3]):
                    continue
                inside = float(box_iou(bj[None], bi[None], over="smaller")[0, 0])
                if inside >= Tracker.PART_INSIDE:
                    out.append((inside, i, j))
        return out

    def _fits_box(self, track: _Track, keypoints: F32) -> bool:
        """Whether ``keypoints`` (33, 2) px fit ``track``'s detection box (``min_box_fit``).

        False for a track found without a whole-body box (BlazePose's detector) or with
        ``min_box_fit`` 0.
        """
        min_fit = self.config.min_box_fit
        if min_fit <= 0 or not np.isfinite(track.box).all():
            return False
        return bool(box_fit(track.box[None], keypoints[None], (np.inf, np.inf))[0] >= min_fit)

    #: A track at most this many seconds old whose landmarks' box overlaps an older track's by
    #: at least :data:`TWIN_BOX_IOU` is that person found again (see :meth:`_twins`).
    TWIN_AGE_S = 1.0
    TWIN_BOX_IOU = 0.7

    def _twins(self, cand: list[_Track], t: float) -> list[tuple[float, int, int]]:
        """``(box IoU, older, newer)`` pairs: a new track on a person already tracked.

        A detection that misses its track's gates (two people overlapping: the box detector
        boxes them off-centre) makes a second track on that person. The landmark model then
        often places the limbs differently in the two regions (legs swapped, an arm of the
        neighbour), so keypoint similarity stays below ``merge_similarity``, and the twin
        lives on, until one of the two slides onto the neighbour and the IDs switch (crowd
        clip01, frames 21-28). The box of all landmarks is steadier than the joints: two
        different people rarely share it (crowd benchmark, scored people: keypoint-box IoU
        >= 0.7 in 2 of 3819 still pairs and 6 of 4407 clip pairs, where walkers cross). Only a
        younger track, at most :data:`TWIN_AGE_S` old, is a twin: people found together (a
        still image) are left to the other rules, and two established people crossing are
        never merged for their boxes alone.
        """
        boxes: list[F32 | None] = []
        for tr in cand:
            kp = tr.keypoints
            boxes.append(None if kp is None else np.concatenate([kp.min(0), kp.max(0)]))
        out: list[tuple[float, int, int]] = []
        for i, bi in enumerate(boxes):
            for j, bj in enumerate(boxes[i + 1:], start=i + 1):  # j is the newer
                young = t - cand[j].first_seen <= self.TWIN_AGE_S
                if bi is None or bj is None or not young or cand[j].age >= cand[i].age:
                    continue
                iou = float(box_iou(bi[None].astype(np.float32), bj[None].astype(np.float32)
                                    )[0, 0])
                if iou >= self.TWIN_BOX_IOU:
                    out.append((iou, i, j))
        return out

    def _merge(self, posed: set[int], t: float) -> list[TrackEvent]:
        """Drops tracks that duplicate an older one (both posed this tick)."""
        cfg = self.config
        cand = [tr for tr in self._tracks if tr.id in posed]  # creation order = oldest first
        if len(cand) < 2:
            return []
        regions = np.stack([tr.region for tr in cand]).astype(np.float32)
        # A duplicate's region often has a different size (it came from another detection),
        # so overlap is measured against the smaller region; the keypoints then decide.
        iou = box_iou(region_boxes(regions), region_boxes(regions), over="smaller")
        pairs: list[tuple[float, int, int]] = []
        for i in range(len(cand)):
            for j in range(i + 1, len(cand)):
                if iou[i, j] < cfg.merge_iou:
                    continue
                a, b = cand[i], cand[j]
                assert a.keypoints is not None and a.visibility is not None
                assert b.keypoints is not None and b.visibility is not None
                scale = float(np.sqrt(0.5 * (a.region[2] * a.region[3]
                                             + b.region[2] * b.region[3])))
                sim = keypoint_similarity(a.keypoints, a.visibility, b.keypoints, b.visibility,
                                          scale, cfg.similarity_kappa)
                if b.keypoints.shape[0] == len(BLAZEPOSE_FLIP):
                    # The landmark model sometimes sees a duplicate region's person mirrored
                    # (left/right swapped): still the same person.
                    flip = BLAZEPOSE_FLIP
                    sim = max(sim, keypoint_similarity(a.keypoints, a.visibility,
                                                       b.keypoints[flip], b.visibility[flip],
                                                       scale, cfg.similarity_kappa))
                if sim >= cfg.merge_similarity:
                    pairs.append((sim, i, j))
        pairs += self._parts(cand)
        pairs += self._twins(cand, t)
        gone: set[int] = set()
        events: list[TrackEvent] = []
        for _, i, j in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            if i in gone or j in gone:
                continue
            gone.add(j)  # j duplicates i, or is a part of i: i's ID stays
            events.append(TrackEvent("merged", cand[j].id, t, other_id=cand[i].id))
            log.debug("track %d merged into %d at t=%.3f", cand[j].id, cand[i].id, t)
        for j in sorted(gone):
            self._release(cand[j], t)
        gone_ids = {cand[j].id for j in gone}
        self._tracks = [tr for tr in self._tracks if tr.id not in gone_ids]
        self._count(merged=len(gone_ids))
        return events

    # ------------------------------------------------------------------ detections

    def add_detections(self, detections: Detections | None, t: float) -> list[TrackEvent]:
        """Matches detections to tracks; unmatched ones become new tracks while slots are free.

        Args:
            detections: The detector's output for the frame captured at ``t``, or None.
            t: Capture time of the detector's frame, monotonic seconds; not before the previous
                ``add_detections`` (it may be before the latest ``update``: the detector is
                slower than the tick).

        Returns:
            ``entered`` / ``reassigned`` events, in decreasing detection score.

        Raises:
            ValueError: ``t`` is before the previous detections' time.
        """
        t = self._check_time(t, self._t_detect, "add_detections")
        self._t_detect = t
        cfg = self.config
        if self._t_update is not None and t < self._t_update - cfg.max_detection_age_s:
            self._count(stale=1)
            log.debug("detections of t=%.3f ignored: older than %.3f s", t,
                      cfg.max_detection_age_s)
            return []
        if detections is None or len(detections) == 0:
            return []
        det_regions = detections.regions
        unmatched = set(range(len(detections)))
        if self._tracks:
            trk_regions = np.stack([tr.region_at(t) for tr in self._tracks]).astype(np.float32)
            ok = self._gate(det_regions, trk_regions)
            iou = box_iou(region_boxes(det_regions), region_boxes(trk_regions))
            cost = np.where(ok, 1.0 - iou, _FORBIDDEN)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if ok[r, c]:
                    unmatched.discard(r)
                    self._tracks[c].hits += 1
                    self._count(matched=1)
        events: list[TrackEvent] = []
        # New tracks take IDs in this order: first those that are nobody's duplicate (most
        # likely a new or returning person), best score first; last the likely duplicates of a
        # track, merged a tick later: centred on it (within half its region's size) and of about
        # its size (0.5-2x). So a duplicate never takes a returning person's pooled ID. (Not
        # "overlapping it": a returning person's region may be large, mid-jump, and hold
        # someone else's.) A detection at least twice a track's size, centred on it and holding
        # its whole region is that person seen coarser (BlazePose's detector sometimes boxes
        # someone with a region twice too large), not tracked: the landmark model would find
        # the same person in it, and keypoint similarity at that scale is too coarse to merge
        # the two before the newcomer is published.
        dup = np.zeros(len(detections), bool)
        coarse = np.zeros(len(detections), bool)
        if self._tracks:
            ratio = (np.sqrt(det_regions[:, None, 2] * det_regions[:, None, 3])
                     / np.sqrt(trk_regions[None, :, 2] * trk_regions[None, :, 3]))
            centred = center_distance(det_regions, trk_regions) <= self.DUP_CENTRE
            dup = (centred & (ratio >= 0.5) & (ratio <= 2.0)).any(axis=1)
            holds = box_iou(region_boxes(trk_regions), region_boxes(det_regions),
                            over="first").T >= 0.95
            coarse = (centred & (ratio >= 2.0) & holds).any(axis=1)
        # A detection turned a quarter turn (a view of the frame turned, looking for people
        # lying) whose box holds most of an upright tracked person's pose is that person seen
        # sideways with their surroundings, not someone lying: the landmark model imagines a
        # lying body across them (the demo clip: the man standing on the box, frames 22-32).
        coarse |= self._sideways(detections)
        self._count(duplicates=int(coarse[sorted(unmatched)].sum()) if unmatched else 0)
        unmatched -= set(np.flatnonzero(coarse).tolist())
        body_boxes = whole_body_boxes(detections)
        order = sorted(unmatched, key=lambda i: (bool(dup[i]), -float(detections.scores[i]), i))
        for i in order:
            region = det_regions[i]
            if not _valid_region(region):
                continue
            if self._superseded(region, t):
                self._count(superseded=1)
                continue
            if len(self._tracks) >= cfg.max_persons:
                self._count(slots_full=1)
                log.debug("detection %d at t=%.3f not tracked: %d slots full", i, t,
                          cfg.max_persons)
                continue
            self._end_coasting_near(region, t)
            tid, reused = self._take_id(region, t)
            new = _Track(tid, region.copy(), first_seen=t, last_seen=t,
                         history=[(t, region.copy())], reused=reused, box=body_boxes[i])
            new.grow(region)
            if reused is not None:
                new.sides = (min(new.sides[0], reused.track.sides[0]),
                             max(new.sides[1], reused.track.sides[1]))
            self._tracks.append(new)
            kind: EventKind = "reassigned" if reused is not None else "entered"
            events.append(TrackEvent(kind, tid, t))
            self._count(**{kind: 1})
        return events

    #: A detection's region turned within this of a quarter turn is a sideways view's.
    SIDEWAYS_TURN = math.pi / 6
    #: ... and it is an upright tracked person's when its box holds this much of their pose's
    #: box (landmarks' extent).
    SIDEWAYS_HOLDS = 0.8

    def _sideways(self, detections: Detections) -> npt.NDArray[np.bool_]:
        """(n,) True for detections turned a quarter turn that hold an upright person.

        Upright: the tracked pose's landmarks span more rows than columns. Held: at least
        :data:`SIDEWAYS_HOLDS` of that span's box inside the detection's box.
        """
        out = np.zeros(len(detections), bool)
        turn = np.asarray(detections.regions[:, 4], np.float64)
        side = np.abs(np.abs(np.arctan2(np.sin(turn), np.cos(turn))) - math.pi / 2) \
            <= self.SIDEWAYS_TURN
        boxes = [np.concatenate([tr.keypoints.min(0), tr.keypoints.max(0)])
                 for tr in self._tracks if tr.keypoints is not None]
        boxes = [b for b in boxes if b[3] - b[1] > b[2] - b[0]]
        if not side.any() or not boxes:
            return out
        held = box_iou(np.asarray(boxes, np.float32), detections.boxes[side], over="first")
        out[np.flatnonzero(side)] = (held >= self.SIDEWAYS_HOLDS).any(axis=0)
        return out

    def _gate(self, a: F32, b: F32) -> npt.NDArray[np.bool_]:
        """(n, m) True where region a[i] may be the same person as region b[j]."""
        iou = box_iou(region_boxes(a), region_boxes(b))
        return (iou >= self.config.match_iou) & (
            center_distance(a, b) <= self.config.match_center_dist)

    def _superseded(self, region: F32, t: float) -> bool:
        """True if a track that was at ``region`` at time ``t`` was dropped at or after ``t``."""
        late = [p for p in self._pool if p.t >= t]
        if not late:
            return False
        gate = self._gate(region[None],
                          np.stack([p.track.region_at(t) for p in late]).astype(np.float32))
        return bool(gate.any())

    def _release(self, track: _Track, t: float) -> None:
        """Gives up an ended track's ID.

        A published track's ID is pooled as a lost person's. An unpublished one gives back
        what it took: the lost person's pool entry it re-used (unchanged, in time order), or
        its fresh ID as unused.
        """
        if track.coasting:  # lost when its pose was, not when it stopped being tried
            t = min(t, track.last_seen)
        if track.confirmed or (track.age > self.config.confirm_ticks and not track.held):
            bisect.insort(self._pool, _Lost(track.id, t, track), key=lambda p: p.t)
        elif track.reused is not None:
            bisect.insort(self._pool, track.reused, key=lambda p: p.t)
        else:
            bisect.insort(self._unused, track.id)

    #: A new detection centred within this share of a track's region size is a likely
    #: duplicate of it (see ``add_detections``).
    DUP_CENTRE = 0.5

    #: A lost person may be this many region sizes away from where they were lost, plus
    #: :data:`REUSE_SPEED` sizes per second since: a walker covers about one body height a
    #: second (a region is ~1.5 of them), a runner or a jumper two or three.
    REUSE_REACH = 0.5
    REUSE_SPEED = 2.0
    #: ... and of a similar size: the new region's side within this factor of the sides the
    #: lost track had over its last second (a person's region does not halve or double while
    #: away; a far person's ID is not handed to a near one).
    REUSE_SIZE = 2.0

    def _end_coasting_near(self, region: F32, t: float) -> None:
        """Ends the coasting tracks a new detection at ``region`` may be, pooling their IDs.

        A person whose pose was lost (``update``'s ``coast``) and whom the detector finds
        again, elsewhere or turned, is that newcomer: their track ends here, so that the
        newcomer takes its ID (:meth:`_reuse`) rather than a fresh one.
        """
        for tr in [tr for tr in self._tracks
                   if tr.coasting and self._near(tr, region, t - tr.last_seen)]:
            self._tracks.remove(tr)
            self._release(tr, t)
            self._count(left=1)

    def _near(self, track: _Track, region: F32, away_s: float) -> bool:
        """Whether a new person at ``region`` may be ``track``'s person, lost ``away_s`` ago.

        Of a similar size (the new side within :data:`REUSE_SIZE` of the smallest and largest
        sides the person had) and at most :data:`REUSE_REACH` plus :data:`REUSE_SPEED` region
        sizes a second of absence from the track's last region. The one test of the lost-ID
        pool (:meth:`_reuse`), of a coasting track found again (:meth:`_end_coasting_near`) and
        of one lost as a newcomer appears (:meth:`update`).
        """
        side = float(region_sides(region))
        last = track.region
        size = float(region_sides(last))
        lo, hi = track.sides
        if size <= 0.0 or not lo / self.REUSE_SIZE <= side <= hi * self.REUSE_SIZE:
            return False
        dist = float(np.hypot(*(region[:2] - last[:2]))) / size
        return dist <= self.REUSE_REACH + self.REUSE_SPEED * max(away_s, 0.0)

    def _take_id(self, region: F32, t: float) -> tuple[int, _Lost | None]:
        """Pops the ID for a new track at ``region``: (id, the pool entry if re-used).

        A recently lost person's ID when one fits (:meth:`_reuse`), then the smallest
        never-published ID, then a new one.
        """
        lost = self._reuse(region, t)
        if lost is not None:
            return lost.id, lost
        if self._unused:
            return self._unused.pop(0), None
        tid = self._next_id
        self._next_id += 1
        return tid, None

    def _reuse(self, region: F32, t: float) -> _Lost | None:
        """Pops the pooled lost person a new track at ``region`` most likely is, if any.

        The one lost where ``region`` is (the match gates on its region at ``t``), else,
        among those of a similar size (the new side within :data:`REUSE_SIZE` of the smallest
        and largest sides the person had) lost at most ``REUSE_REACH + REUSE_SPEED * (t -
        t_lost)`` region sizes away, the most recently lost (the nearest would favour someone
        lost long ago, whose reach has grown, over someone lost a moment ago a little further
        off). Someone who comes in far from, or much larger or smaller than, anyone lost is a
        new person.
        """
        self._pool = [p for p in self._pool if t - p.t <= self.config.id_reuse_window_s]
        if not self._pool:
            return None
        gate = self._gate(region[None], np.stack([p.track.region_at(t) for p in self._pool]
                                                 ).astype(np.float32))[0]
        hits = np.flatnonzero(gate)
        k: int | None = int(hits[-1]) if hits.size else None  # most recent first
        if k is None:
            fit = [j for j, p in enumerate(self._pool) if self._near(p.track, region, t - p.t)]
            k = fit[-1] if fit else None  # the most recently lost of those that fit
        return None if k is None else self._pool.pop(k)

    @staticmethod
    def _check_time(t: float, prev: float | None, what: str) -> float:
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"{what}: timestamp must be finite, got {t}")
        if prev is not None and t < prev:
            raise ValueError(f"{what}: timestamp {t} is before the previous one {prev}; "
                             "timestamps must be monotonic seconds")
        return t
