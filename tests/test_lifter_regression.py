"""Regression guard of the shipped default 3D source on the test set (Pose2Sim
Demo_SinglePerson, scored per view against the 4-view triangulation; edge/bench/lift.py).

The issue's goals are PA-MPJPE <= 70 mm (mean of the 4 views, none > 85), MPJPE <= 110 mm and no
swapped frames. This guard holds the default to a looser version on two views, with a margin
over what it measures today (lifter/metrics.json, edge-bench --lift), so a change that loses
accuracy fails; and the swapped frames of view 2, where the 2D model labels left and right the
other way round in 23 of the 100 frames, to a few (the left/right guard, edge.lift3d.LeftRight,
chosen on Demo_MultiPerson and the demo clip, never on this set). The first run builds the
test set into cache/lifter/ (the pinned pose2sim wheel, the 2D model on 4 x 100 frames: about
a minute); later runs read it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge.bench.lift import ViewSet, accuracy, sides_swapped
from edge.config import Config
from edge.lift3d import COCO17_FLIP, LIMB_PRIOR_FRAMES, Lifter, LimbLengths, WorldLandmarkLifter
from edge.runtime import Manifest

#: Views guarded (1-based, as Pose2Sim names them) and their loose bounds. Measured with the
#: default stage (left/right guard, lifter, limb_window 90 with the prior; 30 fps tracks):
#: PA-MPJPE 62.2 / 58.9 mm, MPJPE 81.7 / 76.4 mm, no swaps.
GUARD_VIEWS = (1, 4)
PA_MPJPE_MAX_MM = 72.0
MPJPE_MAX_MM = 100.0
SWAPPED_MAX = 2
#: View 2's swapped frames: 23 without the left/right guard, 5 with it.
SWAPPED_VIEW2_MAX = 8


@pytest.fixture(scope="module")
def test_set() -> ViewSet:
    return ViewSet.load()


def thirty_fps_tracks(ts: ViewSet) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Each 60 fps view as two 30 fps tracks (every other frame: what a 30 fps device sees),
    as edge-bench --lift runs them: (n,) track per row, and the order putting each track's
    rows together in time order."""
    pos = np.concatenate([np.arange(c) for c in np.bincount(ts.view)])
    track = ts.view * 2 + pos % 2
    return track, np.lexsort((pos, track))


@pytest.fixture(scope="module")
def default_scores(manifest: Manifest, test_set: ViewSet) -> dict[str, Any]:
    """The default 3D stage's output on 30 fps tracks: the 2D model's left/right label flips
    undone (edge.lift3d.LeftRight), the single-frame lifter, limbs steadied."""
    mc = Config().models
    assert mc.lifter == "mlp" and mc.left_right
    entry = manifest.find("lifter", "single", mc.precision)
    track, order = thirty_fps_tracks(test_set)
    kp, conf, track = test_set.kp[order], test_set.conf[order], track[order]
    lifter = Lifter.load(entry.key, 1, manifest)
    sw = sides_swapped(kp, conf, track, lifter=lifter)  # with the 3D of both, as the stage
    flip = list(COCO17_FLIP)
    kp = np.where(sw[:, None, None], kp[:, flip], kp)
    conf = np.where(sw[:, None], conf[:, flip], conf)
    lifted = lifter.lift(kp, conf)
    joints = lifted.joints
    if mc.limb_window > 0:
        limbs = LimbLengths(mc.limb_window, LIMB_PRIOR_FRAMES)
        joints = np.concatenate([limbs(joints[i:i + 1], [int(track[i])], lifted.valid[i:i + 1])
                                 for i in range(len(joints))])
    return accuracy(joints[np.argsort(order)], test_set)


@pytest.mark.parametrize("view", GUARD_VIEWS)
def test_default_meets_loose_goals_on_guarded_views(default_scores: dict[str, Any],
                                                    view: int) -> None:
    views = {v["view"]: v for v in default_scores["views"]}
    v = views[view]
    assert v["frames"] >= 90
    assert v["pa_mpjpe_mm"] <= PA_MPJPE_MAX_MM, v
    assert v["mpjpe_mm"] <= MPJPE_MAX_MM, v
    assert v["swapped_frames"] <= SWAPPED_MAX, v


def test_default_beats_the_world_landmarks(default_scores: dict[str, Any],
                                           test_set: ViewSet) -> None:
    world = accuracy(WorldLandmarkLifter().lift(test_set.world, test_set.conf).joints, test_set)
    mine = default_scores["mean"]
    assert mine["pa_mpjpe_mm"] < world["mean"]["pa_mpjpe_mm"]
    assert mine["mpjpe_mm"] < world["mean"]["mpjpe_mm"]
    assert np.isfinite(mine["pa_mpjpe_mm"])


def test_label_flips_of_view_2_are_undone(default_scores: dict[str, Any]) -> None:
    views = {v["view"]: v for v in default_scores["views"]}
    assert views[2]["swapped_frames"] <= SWAPPED_VIEW2_MAX, views[2]
    assert default_scores["swapped_frames"] <= SWAPPED_VIEW2_MAX, default_scores
