"""Tracker: synthetic people moving frame by frame, deterministic, no models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from edge.geometry import box_iou
from edge.track import (
    Tracker,
    TrackerConfig,
    TrackEvent,
    Tracks,
    keypoint_similarity,
    region_boxes,
)
from edge.types import Detections, Poses2D

FPS = 30.0
SIZE = 200.0  # region side, px
# A fixed body template: 33 points spread over the region, relative to its centre.
_TEMPLATE = np.stack([np.linspace(-0.3, 0.3, 33), np.linspace(-0.4, 0.4, 33) ** 2 - 0.2],
                     axis=1).astype(np.float32)


def region(cx: float, cy: float = 300.0, size: float = SIZE) -> np.ndarray:
    return np.array([cx, cy, size, size, 0.0], np.float32)


def poses(centres: list[tuple[float, float]], presence: list[float],
          size: float = SIZE) -> Poses2D:
    """Poses of people at ``centres`` (px), next region centred on each."""
    n = len(centres)
    c = np.array(centres, np.float32).reshape(n, 2)
    kp = (c[:, None, :] + _TEMPLATE[None] * size).astype(np.float32)
    regs = np.array([region(x, y, size) for x, y in centres], np.float32).reshape(n, 5)
    return Poses2D(kp, np.zeros((n, 33), np.float32), np.ones((n, 33), np.float32),
                   np.array(presence, np.float32), np.zeros((n, 33, 3), np.float32), regs,
                   regs.copy())


def dets(centres: list[tuple[float, float]], scores: list[float] | None = None,
         size: float = SIZE) -> Detections:
    n = len(centres)
    regs = np.array([region(x, y, size) for x, y in centres], np.float32).reshape(n, 5)
    boxes = region_boxes(regs)
    s = np.array(scores if scores is not None else [0.9] * n, np.float32)
    return Detections(boxes, s, np.repeat(regs[:, None, :2], 4, axis=1).copy(), regs)


def kinds(events: list[TrackEvent]) -> list[tuple[str, int]]:
    return [(e.kind, e.track_id) for e in events]


# ---------------------------------------------------------------- two people crossing


@dataclass
class Person:
    name: str
    x0: float
    vx: float  # px per tick
    occluded_by_gap: float | None = None  # hidden while |x - other.x| < this

    def x(self, tick: int) -> float:
        return self.x0 + self.vx * tick


def _scene(tick: int, people: list[Person]) -> dict[str, tuple[float, bool]]:
    """name -> (x, visible) at ``tick``."""
    xs = {p.name: p.x(tick) for p in people}
    out = {}
    for p in people:
        other = [xs[q.name] for q in people if q is not p]
        hidden = p.occluded_by_gap is not None and any(abs(xs[p.name] - o) < p.occluded_by_gap
                                                       for o in other)
        out[p.name] = (xs[p.name], not hidden)
    return out


def _run_crossing(window_s: float, lock_on_occluder: bool = False, ticks: int = 100,
                  det_every: int = 6, det_lag: int = 2
                  ) -> tuple[Tracker, dict[int, set[str]], list[TrackEvent]]:
    """A walks right, B walks left behind A (hidden when closer than 60 px).

    The pose stage finds the person nearest to each region; when that one is hidden, it returns
    a low presence, or (``lock_on_occluder``) the pose of the nearest visible person. The
    detector sees the visible people of a frame ``det_lag`` ticks old.
    """
    people = [Person("A", 100.0, 8.0), Person("B", 900.0, -8.0, occluded_by_gap=60.0)]
    tracker = Tracker(TrackerConfig(id_reuse_window_s=window_s))
    seen: dict[int, set[str]] = {}
    events: list[TrackEvent] = []
    for tick in range(ticks):
        t = tick / FPS
        if tick % det_every == 0:
            td = max(tick - det_lag, 0)
            scene = _scene(td, people)
            vis = [(n, x) for n, (x, v) in scene.items() if v]
            events += tracker.add_detections(
                dets([(x, 300.0) for _, x in vis], [0.9 - 0.1 * i for i in range(len(vis))]),
                td / FPS)
        tracks = tracker.tracks()
        scene = _scene(tick, people)
        centres, presence = [], []
        for tid, reg in zip(tracks.ids.tolist(), tracks.regions, strict=True):
            near = sorted(scene, key=lambda n: abs(scene[n][0] - float(reg[0])))
            if lock_on_occluder:
                near = [n for n in near if scene[n][1]]
            name = near[0]
            x, visible = scene[name]
            if visible:
                seen.setdefault(tid, set()).add(name)
                centres.append((x, 300.0))
                presence.append(0.95)
            else:
                centres.append((float(reg[0]), float(reg[1])))
                presence.append(0.1)
        events += tracker.update(poses(centres, presence), t)
    return tracker, seen, events


@pytest.mark.parametrize(("window_s", "lock", "b_returns_as"), [
    (1.0, False, 2),   # B lost at occlusion, back within the window: same ID
    (0.2, False, 3),   # back after the window: a fresh ID
    (1.0, True, 2),    # B's region slid onto A: merged into A, ID pooled, given back to B
    (0.2, True, 3),
])
def test_crossing_ids_never_swap_and_lost_id_reuse(window_s: float, lock: bool,
                                                   b_returns_as: int) -> None:
    tracker, seen, events = _run_crossing(window_s, lock_on_occluder=lock)
    ks = kinds(events)
    assert ks[:2] == [("entered", 1), ("entered", 2)]
    lost = ("merged", 2) if lock else ("left", 2)
    comeback = "reassigned" if b_returns_as == 2 else "entered"
    assert ks[2:] == [lost, (comeback, b_returns_as)]
    if lock:
        assert events[2].other_id == 1
        seen[2].discard("A")   # the tick of the duplicate, before the merge
    # Every ID only ever followed one person.
    assert seen == {1: {"A"}, 2: {"B"}} | ({3: {"B"}} if b_returns_as == 3 else {})
    assert tracker.tracks().ids.tolist() == [1, b_returns_as]
    # The detection of B from a frame before the loss did not bring B back early.
    assert tracker.stats.superseded == 1 and tracker.stats.slots_full == 0


# ---------------------------------------------------------------- slots, matching, merging


@pytest.mark.parametrize(("max_persons", "n_people", "tracked", "full"),
                         [(4, 3, 3, 0), (4, 6, 4, 2), (1, 3, 1, 2), (2, 2, 2, 0)])
def test_max_persons_respected_and_counted(max_persons: int, n_people: int, tracked: int,
                                           full: int) -> None:
    tracker = Tracker(TrackerConfig(max_persons=max_persons))
    centres = [(150.0 + 300.0 * i, 300.0) for i in range(n_people)]
    scores = [0.9 - 0.05 * i for i in range(n_people)]
    ev = tracker.add_detections(dets(centres, scores), 0.0)
    assert kinds(ev) == [("entered", i + 1) for i in range(tracked)]
    tr = tracker.tracks()
    assert len(tr) == tracked
    # The highest-scoring detections got the slots.
    np.testing.assert_allclose(tr.regions[:, 0], [c[0] for c in centres[:tracked]])
    assert tracker.stats.slots_full == full
    # Again: the tracked people match, the rest is still counted, nothing duplicates.
    assert tracker.add_detections(dets(centres, scores), 0.1) == []
    assert len(tracker.tracks()) == tracked
    assert tracker.stats.matched == tracked and tracker.stats.slots_full == 2 * full


@pytest.mark.parametrize(("dx", "matched"), [
    (0.0, True), (20.0, True),     # same person, a little motion
    (45.0, False),                 # neighbour standing next to them (IoU 0.63, centres apart)
    (400.0, False),                # far away
])
def test_match_gates(dx: float, matched: bool) -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(400.0, 300.0)]), 0.0)
    ev = tracker.add_detections(dets([(400.0 + dx, 300.0)]), 0.1)
    assert (ev == []) is matched
    assert len(tracker.tracks()) == (1 if matched else 2)
    assert tracker.tracks().hits.tolist()[0] == (2 if matched else 1)


def test_hungarian_assigns_each_detection_to_its_own_track() -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(300.0, 300.0), (345.0, 300.0)]), 0.0)
    # Order reversed and a small shift: both match, no new track.
    assert tracker.add_detections(dets([(350.0, 300.0), (305.0, 300.0)]), 0.1) == []
    assert tracker.tracks().hits.tolist() == [2, 2]


def test_old_detection_is_compared_with_the_region_at_its_time() -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    for k in range(1, 11):  # runs right fast: 12 px per tick -> 120 px at t = 10 ticks
        tracker.tracks()
        tracker.update(poses([(100.0 + 12.0 * k, 300.0)], [0.9]), k / FPS)
    # A detection of the frame at tick 2 (x = 124) arrives now: it is the same person.
    assert tracker.add_detections(dets([(124.0, 300.0)]), 2 / FPS) == []
    assert len(tracker.tracks()) == 1


def test_duplicate_tracks_merge_into_the_older_id() -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(300.0, 300.0)]), 0.0)
    ev = tracker.add_detections(dets([(345.0, 300.0)]), 0.05)   # gated out: a second track
    assert kinds(ev) == [("entered", 2)]
    tracker.tracks()
    # The pose model finds the same person in both regions.
    ev = tracker.update(poses([(310.0, 300.0), (312.0, 300.0)], [0.9, 0.9]), 0.1)
    assert ev == [TrackEvent("merged", 2, 0.1, other_id=1)]
    assert tracker.tracks().ids.tolist() == [1]
    assert tracker.stats.merged == 1


def test_close_different_people_are_not_merged() -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(300.0, 300.0), (360.0, 300.0)]), 0.0)
    tracker.tracks()
    assert tracker.update(poses([(300.0, 300.0), (360.0, 300.0)], [0.9, 0.9]), 0.1) == []
    assert tracker.tracks().ids.tolist() == [1, 2]


@pytest.mark.parametrize(("presence", "next_region_ok", "left"), [
    ([0.9, 0.9], True, []), ([0.9, 0.3], True, [2]), ([0.2, 0.3], True, [1, 2]),
    ([0.9, float("nan")], True, [2]), ([0.9, 0.9], False, [2]),
])
def test_presence_drop_emits_left_in_track_order(presence: list[float], next_region_ok: bool,
                                                 left: list[int]) -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(200.0, 300.0), (700.0, 300.0)]), 0.0)
    tracker.tracks()
    p = poses([(200.0, 300.0), (700.0, 300.0)], presence)
    if not next_region_ok:
        nr = p.next_regions.copy()
        nr[1, 2] = 0.0
        p = Poses2D(p.keypoints, p.depth, p.visibility, p.presence, p.world, p.regions, nr)
    ev = tracker.update(p, 0.1)
    assert ev == [TrackEvent("left", i, 0.1) for i in left]
    assert tracker.tracks().ids.tolist() == [i for i in (1, 2) if i not in left]
    assert tracker.stats.left == len(left)


def test_id_pool_prefers_where_and_when_people_were_lost() -> None:
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(100.0, 300.0), (500.0, 300.0), (900.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (500.0, 300.0), (900.0, 300.0)], [0.9] * 3), 0.05)
    tracker.tracks()  # all three published
    tracker.update(poses([(100.0, 300.0), (500.0, 300.0), (900.0, 300.0)], [0.1, 0.9, 0.9]),
                   0.1)   # 1 lost first
    tracker.tracks()
    tracker.update(poses([(500.0, 300.0), (900.0, 300.0)], [0.1, 0.9]), 0.2)  # then 2
    # Somebody 0.6 region sizes from where 2 was lost 0.1 s ago (within 0.5 + 2 x 0.1), 2.6
    # from where 1 was: 2.
    assert kinds(tracker.add_detections(dets([(620.0, 300.0)]), 0.3)) == [("reassigned", 2)]
    # Somebody where 1 was lost: 1; then somebody far from anyone lost: a fresh ID.
    assert kinds(tracker.add_detections(dets([(100.0, 300.0)]), 0.4)) == [("reassigned", 1)]
    assert kinds(tracker.add_detections(dets([(1200.0, 700.0)]), 0.5)) == [("entered", 4)]


def test_a_lost_id_goes_to_someone_near_of_a_similar_size_only() -> None:
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(500.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(500.0, 300.0)], [0.9]), 0.05)
    tracker.tracks()
    tracker.update(poses([(500.0, 300.0)], [0.1]), 0.1)  # 1 lost
    # Far away soon after (3 sizes in 0.2 s), or 3x larger where he was: somebody else.
    assert kinds(tracker.add_detections(dets([(1100.0, 300.0)]), 0.3)) == [("entered", 2)]
    assert kinds(tracker.add_detections(dets([(560.0, 300.0)], size=3 * SIZE), 0.35)) == [
        ("entered", 3)]
    # The same distance 2 s later is within reach (0.5 + 2 x 2 sizes).
    assert kinds(tracker.add_detections(dets([(1100.0, 700.0)]), 2.1)) == [("reassigned", 1)]


def test_a_person_found_again_in_the_tick_their_track_is_lost_keeps_their_id() -> None:
    # Mid-backflip the landmarks lose someone in the same tick as the detector finds them
    # again a little further on: the newcomer (fresh ID, unpublished) takes the lost ID.
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0)], [0.9]), 0.05)  # 1 published
    assert kinds(tracker.add_detections(dets([(180.0, 300.0)]), 0.1)) == [("entered", 2)]
    tracker.tracks()
    ev = kinds(tracker.update(poses([(100.0, 300.0), (180.0, 300.0)], [0.1, 0.9]), 0.1))
    assert ev == [("left", 1), ("merged", 2), ("reassigned", 1)]
    assert tracker.tracks().ids.tolist() == [1]
    # 2 was never published: it is handed out again.
    assert kinds(tracker.add_detections(dets([(1500.0, 700.0)]), 0.2)) == [("entered", 2)]


def test_spatial_preference_beats_recency() -> None:
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(100.0, 300.0), (500.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (500.0, 300.0)], [0.9, 0.9]), 0.05)
    tracker.tracks()  # both published
    tracker.update(poses([(100.0, 300.0), (500.0, 300.0)], [0.1, 0.9]), 0.1)
    tracker.tracks()
    tracker.update(poses([(500.0, 300.0)], [0.1]), 0.2)
    assert kinds(tracker.add_detections(dets([(105.0, 300.0)]), 0.3)) == [("reassigned", 1)]


def test_detection_older_than_the_loss_does_not_resurrect() -> None:
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0)], [0.9]), 0.05)   # published
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0)], [0.1]), 0.5)   # gone at 0.5
    assert tracker.add_detections(dets([(100.0, 300.0)]), 0.4) == []
    assert tracker.stats.superseded == 1 and len(tracker.tracks()) == 0
    assert kinds(tracker.add_detections(dets([(100.0, 300.0)]), 0.6)) == [("reassigned", 1)]


def test_stale_detections_are_ignored_and_counted() -> None:
    tracker = Tracker(TrackerConfig(max_detection_age_s=0.5))
    tracker.update(None, 2.0)
    assert tracker.add_detections(dets([(100.0, 300.0)]), 1.0) == []
    assert tracker.stats.stale == 1 and len(tracker.tracks()) == 0


def test_update_without_poses_keeps_tracks_and_ages_them() -> None:
    tracker = Tracker()
    assert tracker.update(None, 0.0) == []
    assert tracker.update(Poses2D.empty(), 0.1) == []
    tracker.add_detections(dets([(100.0, 300.0)]), 0.1)
    before = tracker.tracks()
    assert tracker.update(None, 0.2) == [] and tracker.update(Poses2D.empty(), 0.3) == []
    after = tracker.tracks()
    np.testing.assert_array_equal(after.regions, before.regions)
    assert after.age.tolist() == [2] and after.last_seen.tolist() == [0.1]


def test_tracks_created_between_snapshot_and_update_are_untouched() -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    snap = tracker.tracks()
    tracker.add_detections(dets([(700.0, 300.0)]), 0.01)   # arrives mid-tick
    ev = tracker.update(poses([(110.0, 300.0)], [0.9]), 0.03)   # one row: the snapshot's
    assert ev == [] and snap.ids.tolist() == [1]
    tr = tracker.tracks()
    assert tr.ids.tolist() == [1, 2]
    np.testing.assert_allclose(tr.regions[:, 0], [110.0, 700.0])


def test_inputs_are_not_mutated_and_outputs_are_frozen() -> None:
    tracker = Tracker()
    d = dets([(100.0, 300.0)])
    regs = d.regions.copy()
    tracker.add_detections(d, 0.0)
    snap = tracker.tracks()
    p = poses([(120.0, 300.0)], [0.9])
    tracker.update(p, 0.1)
    np.testing.assert_array_equal(d.regions, regs)
    assert snap.regions[0, 0] == 100.0   # the snapshot did not move with the track
    with pytest.raises(ValueError):
        snap.regions[0, 0] = 1.0


def test_reset_and_per_tracker_ids() -> None:
    a, b = Tracker(), Tracker()
    a.add_detections(dets([(100.0, 300.0), (600.0, 300.0)]), 0.0)
    assert kinds(b.add_detections(dets([(100.0, 300.0)]), 0.0)) == [("entered", 1)]
    a.reset()
    assert len(a.tracks()) == 0 and a.stats.entered == 0
    assert kinds(a.add_detections(dets([(100.0, 300.0)]), 0.0)) == [("entered", 1)]


@pytest.mark.parametrize("call", ["update", "add_detections"])
def test_out_of_order_timestamps_raise(call: str) -> None:
    tracker = Tracker()
    getattr(tracker, call)(None, 1.0)
    getattr(tracker, call)(None, 1.0)   # equal is fine
    with pytest.raises(ValueError, match="before the previous"):
        getattr(tracker, call)(None, 0.5)
    with pytest.raises(ValueError, match="finite"):
        getattr(tracker, call)(None, float("nan"))


def test_pose_rows_must_match_the_snapshot() -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(100.0, 300.0), (600.0, 300.0)]), 0.0)
    tracker.tracks()
    with pytest.raises(ValueError, match="1 pose rows for 2 tracks"):
        tracker.update(poses([(100.0, 300.0)], [0.9]), 0.1)
    # Explicit ids select the rows.
    assert tracker.update(poses([(600.0, 300.0)], [0.1]), 0.1,
                          ids=np.array([2], np.int64)) == [TrackEvent("left", 2, 0.1)]


@pytest.mark.parametrize("kwargs", [
    {"max_persons": 0}, {"min_presence": 1.5}, {"match_iou": 0.0}, {"merge_iou": 1.1},
    {"match_center_dist": 0.0}, {"similarity_kappa": -1.0}, {"id_reuse_window_s": -1.0},
    {"max_detection_age_s": float("inf")}, {"merge_similarity": -0.1}, {"min_box_fit": 1.5},
])
def test_bad_config_raises(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="TrackerConfig"):
        TrackerConfig(**kwargs)  # type: ignore[arg-type]


def test_tracks_validation() -> None:
    with pytest.raises(ValueError, match=r"Tracks.regions must have shape \(n, 5\)"):
        Tracks(np.zeros(1, np.int64), np.zeros((1, 4), np.float32), np.zeros(1, np.int64),
               np.zeros(1, np.int64), np.zeros(1), np.zeros(1), np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="unique"):
        Tracks(np.zeros(2, np.int64), np.zeros((2, 5), np.float32), np.zeros(2, np.int64),
               np.zeros(2, np.int64), np.zeros(2), np.zeros(2), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"Tracks.boxes must have shape \(n, 4\)"):
        Tracks(np.zeros(1, np.int64), np.zeros((1, 5), np.float32), np.zeros(1, np.int64),
               np.zeros(1, np.int64), np.zeros(1), np.zeros(1), np.zeros((1, 5), np.float32))
    assert len(Tracks.empty()) == 0


@pytest.mark.parametrize(("rot", "w", "h"), [(0.0, 100.0, 50.0), (np.pi / 2, 50.0, 100.0),
                                             (np.pi / 4, 100.0 / np.sqrt(2), 100.0 / np.sqrt(2))])
def test_region_boxes(rot: float, w: float, h: float) -> None:
    box = region_boxes(np.array([[0.0, 0.0, 100.0, 50.0, rot]], np.float32))[0]
    if rot == np.pi / 4:
        np.testing.assert_allclose(box, [-53.033, -53.033, 53.033, 53.033], atol=1e-3)
    else:
        np.testing.assert_allclose(box, [-w / 2, -h / 2, w / 2, h / 2], atol=1e-3)


def test_box_iou_and_similarity() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 1.0], [0.0, 0.0]])
    kp = _TEMPLATE * 200.0
    vis = np.ones(33, np.float32)
    assert keypoint_similarity(kp, vis, kp, vis, 200.0, 0.1) == pytest.approx(1.0)
    assert keypoint_similarity(kp, vis, kp + 60.0, vis, 200.0, 0.1) < 0.01
    nan = kp.copy()
    nan[:] = np.nan
    assert keypoint_similarity(kp, vis, nan, vis, 200.0, 0.1) == 0.0


def test_unpublished_ids_are_not_pooled_as_lost_people() -> None:
    # A track that ends before it was published (a false or duplicate detection) gives its ID
    # back as unused: nobody saw it, so it must not be handed out as a returning person's.
    tracker = Tracker(TrackerConfig(confirm_ticks=1))
    tracker.add_detections(dets([(100.0, 300.0), (900.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (900.0, 300.0)], [0.9, 0.9]), 0.1)
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (900.0, 300.0)], [0.9, 0.9]), 0.2)  # both published
    assert kinds(tracker.add_detections(dets([(500.0, 300.0)]), 0.25)) == [("entered", 3)]
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (900.0, 300.0), (500.0, 300.0)], [0.1, 0.9, 0.1]),
                   0.3)  # 1 (published) and 3 (not yet) end
    # Somebody near where 1 was lost: the lost person's ID 1 (pooled); then somebody new: the
    # unused 3, not a fresh 4.
    assert kinds(tracker.add_detections(dets([(150.0, 300.0)]), 0.35)) == [("reassigned", 1)]
    assert kinds(tracker.add_detections(dets([(1500.0, 700.0)]), 0.36)) == [("entered", 3)]


def test_a_reused_id_goes_back_to_the_pool_when_its_new_track_dies_unpublished() -> None:
    tracker = Tracker(TrackerConfig(confirm_ticks=1))
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    for t in (0.1, 0.2):
        tracker.tracks()
        tracker.update(poses([(100.0, 300.0)], [0.9]), t)
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0)], [0.1]), 0.3)  # published 1 is lost
    assert kinds(tracker.add_detections(dets([(180.0, 300.0)]), 0.35)) == [("reassigned", 1)]
    tracker.tracks()
    tracker.update(poses([(180.0, 300.0)], [0.1]), 0.4)  # ... by a false detection, gone at once
    # The person comes back where 1 was lost: still 1.
    assert kinds(tracker.add_detections(dets([(100.0, 300.0)]), 0.45)) == [("reassigned", 1)]


def test_a_detection_on_a_tracked_person_takes_an_id_last() -> None:
    # Two unmatched detections in one batch: a returning person near where they were lost and
    # a duplicate centred on a current track (better score). The returning person gets the
    # pooled ID; the duplicate a fresh one.
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(100.0, 300.0), (900.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (900.0, 300.0)], [0.9, 0.9]), 0.05)  # published
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (900.0, 300.0)], [0.1, 0.9]), 0.1)  # 1 lost
    d = dets([(930.0, 320.0), (220.0, 300.0)])
    d = Detections(d.boxes, np.array([0.99, 0.6], np.float32), d.keypoints, d.regions * np.array(
        [1.0, 1.0, 0.8, 0.8, 1.0], np.float32))  # the duplicate: smaller region, no IoU match
    ev = kinds(tracker.add_detections(d, 0.2))
    assert ("reassigned", 1) in ev and ("entered", 3) in ev
    assert ev[0] == ("reassigned", 1)


def test_a_coarse_detection_around_a_tracked_person_is_not_a_new_person() -> None:
    # A region 2.5x a tracked person's, centred on them and holding their region: that person
    # seen coarser, not tracked; half that size (a neighbour) is someone else.
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(400.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(400.0, 300.0)], [0.9]), 0.05)
    assert tracker.add_detections(dets([(430.0, 320.0)], size=2.5 * SIZE), 0.1) == []
    assert len(tracker.tracks()) == 1 and tracker.stats.duplicates == 1
    assert kinds(tracker.add_detections(dets([(520.0, 300.0)]), 0.2)) == [("entered", 2)]


def _mirrored(p: Poses2D, row: int) -> Poses2D:
    """``p`` with one row's joints in reverse order: the same landmark box, other joints."""
    kp = p.keypoints.copy()
    kp[row] = kp[row][::-1]
    return dataclasses.replace(p, keypoints=kp)


@pytest.mark.parametrize(("together", "twin_after_s", "merged"), [
    (False, 0.1, True),    # a second track on a tracked person: merged a tick later
    (False, 1.2, False),   # an established person whose box meets another's: both kept
    (True, 0.1, False),    # found in one batch (a still image): left to the other rules
])
def test_a_young_track_with_a_tracked_persons_landmark_box_is_merged(
        together: bool, twin_after_s: float, merged: bool) -> None:
    """The twin's joints disagree (keypoint similarity is low), its landmarks' box does not."""
    tracker = Tracker()
    if together:
        tracker.add_detections(dets([(300.0, 300.0), (345.0, 300.0)]), 0.0)
    else:
        tracker.add_detections(dets([(300.0, 300.0)]), 0.0)
        tracker.tracks()
        tracker.update(poses([(300.0, 300.0)], [0.9]), 0.05)
        ev = tracker.add_detections(dets([(345.0, 300.0)]), 0.08)  # gated out: a second track
        assert kinds(ev) == [("entered", 2)]
    t = 0.1
    while t < twin_after_s:  # the second person elsewhere until then
        tracker.tracks()
        assert tracker.update(poses([(300.0, 300.0), (700.0, 300.0)], [0.9, 0.9]), t) == []
        t += 0.1
    tracker.tracks()
    ev = tracker.update(_mirrored(poses([(300.0, 300.0), (300.0, 300.0)], [0.9, 0.9]), 1), t)
    assert (ev == [TrackEvent("merged", 2, t, other_id=1)]) is merged, ev
    assert tracker.tracks().ids.tolist() == ([1] if merged else [1, 2])


def test_early_confirmation_publishes_a_newcomer_at_once_and_pools_its_id() -> None:
    # Realtime mode confirms a newcomer whose first pose fits its box on its first tick
    # (PoseCore._early): published then, and its ID pooled as a seen person's when it ends.
    tracker = Tracker(TrackerConfig(confirm_ticks=1))
    tracker.add_detections(dets([(100.0, 300.0), (900.0, 300.0)]), 0.0)
    tracks = tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (900.0, 300.0)], [0.9, 0.9]), 0.1)
    tracker.confirm(np.array([1], np.int64))
    kept = tracker.tracks()
    assert kept.ids.tolist() == tracks.ids.tolist() == [1, 2]
    assert tracker.shown(kept).tolist() == [True, False]  # 2 waits for its confirmation tick
    tracker.update(poses([(100.0, 300.0), (900.0, 300.0)], [0.1, 0.9]), 0.2)  # 1 is lost
    assert tracker.shown(tracker.tracks()).tolist() == [True]  # 2 after its tick
    assert kinds(tracker.add_detections(dets([(150.0, 300.0)]), 0.25)) == [("reassigned", 1)]


def test_a_newcomer_on_someone_tracked_is_not_confirmed_early() -> None:
    # A detection beside a tracked person whose region overlaps theirs (a duplicate or a part
    # the keypoints may tell only a tick later) waits for its confirmation tick.
    tracker = Tracker(TrackerConfig(confirm_ticks=1))
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    for t in (0.1, 0.2):
        tracker.tracks()
        tracker.update(poses([(100.0, 300.0)], [0.9]), t)
    # 60 px off a 200 px region: past the match gate.
    assert kinds(tracker.add_detections(dets([(160.0, 300.0), (900.0, 300.0)]), 0.25)) == [
        ("entered", 2), ("entered", 3)]
    tracker.tracks()
    # Different poses (not merged), regions overlapping by 0.6 of a region.
    tracker.update(poses([(100.0, 300.0), (160.0, 330.0), (900.0, 300.0)], [0.9, 0.9, 0.9]),
                   0.3)
    tracker.confirm(np.array([2, 3], np.int64))
    kept = tracker.tracks()
    assert kept.ids.tolist() == [1, 2, 3]
    assert tracker.shown(kept).tolist() == [True, False, True]


@pytest.mark.parametrize("hold", [True, False])
def test_realtime_holds_back_a_likely_duplicate_past_its_confirmation_tick(hold: bool) -> None:
    # A second track centred on a published person (here a third of a region off, poses too
    # far apart to merge) is shown only once it has lasted Tracker.HOLD_S, with ``hold``
    # (realtime mode); without, after its confirmation tick. Dying held, it was never
    # published: its ID is given back unused.
    tracker = Tracker(TrackerConfig(confirm_ticks=1))
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    for t in (0.1, 0.2):
        tracker.tracks()
        tracker.update(poses([(100.0, 300.0)], [0.9]), t)
        assert tracker.shown(tracker.tracks(), hold).tolist() == [t > 0.1]
    tracker.add_detections(dets([(160.0, 330.0)]), 0.25)
    shown = []
    times = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    for t in times:
        tracker.tracks()
        tracker.update(poses([(100.0, 300.0), (160.0, 330.0)], [0.9, 0.9]), t)
        shown.append(tracker.shown(tracker.tracks(), hold).tolist())
    assert Tracker.HOLD_S == 0.5  # the times above are chosen around it
    assert shown == ([[True, t - 0.25 > Tracker.HOLD_S] for t in times] if hold
                     else [[True, t > 0.3] for t in times])
    if hold:  # a fresh run: dies while held
        tracker.reset()
        tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
        for t in (0.1, 0.2):
            tracker.tracks()
            tracker.update(poses([(100.0, 300.0)], [0.9]), t)
            tracker.shown(tracker.tracks(), hold)
        tracker.add_detections(dets([(160.0, 330.0)]), 0.25)
        for t, p in ((0.3, 0.9), (0.4, 0.9), (0.5, 0.1)):
            tracker.tracks()
            tracker.update(poses([(100.0, 300.0), (160.0, 330.0)], [0.9, p]), t)
            tracker.shown(tracker.tracks(), hold)
        assert kinds(tracker.add_detections(dets([(900.0, 300.0)]), 0.55)) == [("entered", 2)]


def test_a_lost_person_coasts_hidden_and_a_newcomer_near_takes_their_id() -> None:
    # Realtime mode (``coast``): a published person whose pose is lost is kept, hidden, at
    # their last region for Tracker.COAST_S and comes back under their ID; one the detector
    # finds again elsewhere meanwhile hands their ID to that newcomer; past COAST_S the track
    # ends.
    tracker = Tracker(TrackerConfig(confirm_ticks=1))
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    for t in (0.1, 0.2):
        tracker.tracks()
        tracker.update(poses([(100.0, 300.0)], [0.9]), t, coast=np.array([True]))
        tracker.shown(tracker.tracks())
    tracker.tracks()
    assert tracker.update(poses([(100.0, 300.0)], [0.1]), 0.3, coast=np.array([True])) == []
    kept = tracker.tracks()
    assert kept.ids.tolist() == [1] and kept.last_seen.tolist() == [0.2]  # hidden: no pose
    tracker.update(poses([(110.0, 300.0)], [0.9]), 0.4, coast=np.array([True]))
    assert tracker.tracks().last_seen.tolist() == [0.4]  # back, same ID
    tracker.tracks()
    tracker.update(poses([(110.0, 300.0)], [0.1]), 0.5, coast=np.array([True]))
    # Found again by the detector, turned (a region the gates do not match): it takes ID 1.
    assert kinds(tracker.add_detections(dets([(260.0, 340.0)]), 0.55)) == [("reassigned", 1)]
    assert tracker.tracks().ids.tolist() == [1]
    # Without coast (every-frame mode) the track ends at once; with it, after COAST_S.
    for coast, ends_at in ((None, 0.45), (np.array([True]), 0.65)):
        tracker.reset()
        tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
        for t in (0.1, 0.2, 0.3):
            tracker.tracks()
            tracker.update(poses([(100.0, 300.0)], [0.9]), t, coast=coast)
            tracker.shown(tracker.tracks())
        left = []
        for t in (0.45, 0.55, 0.65, 0.75):
            if not len(tracker.tracks()):
                break
            events = tracker.update(poses([(100.0, 300.0)], [0.1]), t, coast=coast)
            left += [t for e in events if e.kind == "left"]
        assert left == [ends_at]


def test_a_person_found_again_a_tick_before_their_track_ends_keeps_their_id() -> None:
    # Under load (realtime): the detector finds the man again while his old track still
    # coasts; his old track ends on the next tick, the newcomer not yet published: it takes
    # the lost ID rather than keeping its fresh one.
    tracker = Tracker(TrackerConfig(confirm_ticks=1))
    tracker.add_detections(dets([(100.0, 300.0)]), 0.0)
    for t in (0.05, 0.1):
        tracker.tracks()
        tracker.update(poses([(100.0, 300.0)], [0.9]), t)
    tracker.shown(tracker.tracks())  # 1 published
    assert kinds(tracker.add_detections(dets([(180.0, 300.0)]), 0.15)) == [("entered", 2)]
    tracker.tracks()
    tracker.update(poses([(100.0, 300.0), (180.0, 300.0)], [0.9, 0.9]), 0.2)
    tracker.tracks()
    ev = kinds(tracker.update(poses([(100.0, 300.0), (180.0, 300.0)], [0.1, 0.9]), 0.25))
    assert ev == [("left", 1), ("merged", 2), ("reassigned", 1)]
    kept = tracker.tracks()
    assert kept.ids.tolist() == [1] and tracker.shown(kept).tolist() == [True]


def test_a_newcomer_found_as_a_person_is_lost_takes_their_id() -> None:
    # Realtime (``coast``): the detector finds a published person in a posture their region no
    # longer matches (a backflip's landing: smaller, lower), and in the next tick the
    # landmarks lose them on the old region. The newcomer, not yet published, is them: the
    # old track ends at once and the newcomer takes its ID (before, the old track coasted
    # hidden while the newcomer was published under a fresh ID: a third ID on the demo clip).
    tracker = Tracker(TrackerConfig(confirm_ticks=1))
    tracker.add_detections(dets([(500.0, 300.0)], size=600.0), 0.0)
    for t in (0.1, 0.2):
        tracker.tracks()
        tracker.update(poses([(500.0, 300.0)], [0.9], size=600.0), t, coast=np.array([True]))
        tracker.shown(tracker.tracks())
    assert kinds(tracker.add_detections(dets([(620.0, 480.0)], size=330.0), 0.25)) == [
        ("entered", 2)]
    tracks = tracker.tracks()
    assert tracks.ids.tolist() == [1, 2]
    events = tracker.update(poses([(500.0, 300.0), (620.0, 480.0)], [0.1, 0.9], size=330.0),
                            0.3, coast=np.array([True, True]))
    assert ("left", 1) in kinds(events) and ("reassigned", 1) in kinds(events)
    assert tracker.tracks().ids.tolist() == [1]
    tracker.update(poses([(620.0, 480.0)], [0.9], size=330.0), 0.35, coast=np.array([True]))
    kept = tracker.tracks()
    assert kept.ids.tolist() == [1] and tracker.shown(kept).tolist() == [True]


def test_recent_sides_remember_the_size_a_reused_id_had_a_moment_ago() -> None:
    """A new track that takes a lost person's ID carries that person's size of a moment ago
    (``PoseCore`` ends a pose cut by the frame's side that shrank far below it); older
    sizes are forgotten after ``max_detection_age_s``."""
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(500.0, 300.0)]), 0.0)
    tracker.tracks()
    tracker.update(poses([(500.0, 300.0)], [0.9]), 0.05)
    tracker.tracks()
    tracker.update(poses([(500.0, 300.0)], [0.1]), 0.1)  # lost
    assert kinds(tracker.add_detections(dets([(520.0, 300.0)], size=150.0), 0.2)) == [
        ("reassigned", 1)]
    tracker.tracks()
    tracker.update(poses([(520.0, 300.0)], [0.9], size=60.0), 0.25)  # shrunk onto a part
    assert tracker.recent_sides().tolist() == pytest.approx([SIZE])
    t = 0.25
    while t < 1.5:  # a second and more at the small size: that is its size now
        t += 0.1
        tracker.tracks()
        tracker.update(poses([(520.0, 300.0)], [0.9], size=60.0), t)
    assert tracker.recent_sides().tolist() == pytest.approx([60.0])


def test_smallest_sides_leave_out_a_tracks_first_moments_and_forget_old_sizes() -> None:
    """``PoseCore`` drops a pose stretched far over the smallest size its track had a moment
    ago: that size leaves out the track's first ``min_age_s`` (its first region may hold a
    part of its person), is inf before, and forgets sizes older than ``max_detection_age_s``."""
    tracker = Tracker(TrackerConfig(confirm_ticks=0))
    tracker.add_detections(dets([(500.0, 300.0)], size=80.0), 0.0)  # a part of someone
    assert tracker.smallest_sides(0.0, 0.5).tolist() == [np.inf]
    t = 0.0
    for size in (SIZE, SIZE, 150.0, SIZE, SIZE, SIZE):  # 0.1-0.6 s
        t += 0.1
        tracker.tracks()
        tracker.update(poses([(500.0, 300.0)], [0.9], size=size), t)
    # Since 0.5 s: the regions of 0.5 and 0.6 s, not the 80 px first one nor 150 px at 0.3 s.
    assert tracker.smallest_sides(t, 0.5).tolist() == pytest.approx([SIZE])
    assert tracker.smallest_sides(t, 0.2).tolist() == pytest.approx([150.0])
    while t < 1.45:  # over a second later, 150 px is forgotten
        t += 0.1
        tracker.tracks()
        tracker.update(poses([(500.0, 300.0)], [0.9], size=SIZE), t)
    assert tracker.smallest_sides(t, 0.2).tolist() == pytest.approx([SIZE])


def _spanning(boxes: list[tuple[float, float, float, float]], presence: float = 0.9) -> Poses2D:
    """Poses whose 33 landmarks span each ``x1, y1, x2, y2`` box (a body filling it)."""
    n = len(boxes)
    kp = np.zeros((n, 33, 2), np.float32)
    regs = np.zeros((n, 5), np.float32)
    t = np.linspace(0.0, 1.0, 33)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        kp[k, :, 0] = x1 + (x2 - x1) * np.abs(np.sin(7 * t))  # every column of the box
        kp[k, :, 1] = y1 + (y2 - y1) * t
        side = 1.25 * max(x2 - x1, y2 - y1)
        regs[k] = ((x1 + x2) / 2, (y1 + y2) / 2, side, side, 0.0)
    kp[:, 0, :] = np.array([b[:2] for b in boxes], np.float32)  # the corners themselves
    kp[:, -1, :] = np.array([b[2:] for b in boxes], np.float32)
    return Poses2D(kp, np.zeros((n, 33), np.float32), np.ones((n, 33), np.float32),
                   np.full(n, presence, np.float32), np.zeros((n, 33, 3), np.float32), regs,
                   regs.copy())


def _boxed(boxes: list[tuple[float, float, float, float]]) -> Detections:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    side = 1.25 * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    regs = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, side, side,
                     np.zeros(len(b))], axis=1).astype(np.float32)
    return Detections(b, np.full(len(b), 0.8, np.float32),
                      np.zeros((len(b), 0, 2), np.float32), regs)


@pytest.mark.parametrize(("fits", "merged"), [
    (True, False),   # a far person beside a near one, found in a stream: a person
    (False, True),   # a "pose" the model imagined at the near one's hand: a part of them
])
def test_a_newcomer_that_fitted_its_box_is_never_taken_for_a_part(fits: bool,
                                                                  merged: bool) -> None:
    """A 50-px walker found beside a 300-px person, inside their body box widened by
    ``PART_MARGIN``: kept when its first pose spanned the whole-body box it was detected in,
    however it moves after (the fit is taken at its first pose: crowd clips, a walker soon
    left the box of a detection from a second before and was merged away as a hand); a
    newcomer whose pose did not fit its box is still merged as a part."""
    tracker = Tracker()
    near = (200.0, 100.0, 300.0, 400.0)
    tracker.add_detections(_boxed([near]), 0.0)
    tracker.tracks()
    tracker.update(_spanning([near]), 0.0)
    far = (310.0, 240.0, 330.0, 290.0)
    assert kinds(tracker.add_detections(_boxed([far]), 1 / FPS)) == [("entered", 2)]
    events: list[TrackEvent] = []
    for tick in range(1, 31):  # one second of the walker walking right, 1 px a frame
        ids = tracker.tracks().ids.tolist()
        x = float(tick - 1)
        mine = (far[0] + x, far[1], far[2] + x, far[3])
        if not fits:  # the body imagined over the hand's whole region, not its box
            mine = (290.0, 215.0, 350.0, 315.0)
        events += tracker.update(_spanning([near, mine][:len(ids)]), tick / FPS)
    assert (events == [TrackEvent("merged", 2, 1 / FPS, other_id=1)]) is merged, events
    assert tracker.tracks().ids.tolist() == ([1] if merged else [1, 2])
