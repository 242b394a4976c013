"""Regression guard of the shipped default 3D source on the test set (Pose2Sim
Demo_SinglePerson, scored per view against the 4-view triangulation; edge/bench/lift.py).

The issue's goals are PA-MPJPE <= 70 mm (mean of the 4 views, none > 85), MPJPE <= 110 mm and no
swapped frames. This guard holds the default to a looser version on two views, with a margin
over what it measures today (lifter/metrics.json, edge-bench --lift), so a change that loses
accuracy fails. The first run builds the test set into cache/lifter/ (the pinned pose2sim
wheel, the 2D model on 4 x 100 frames: about a minute); later runs read it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge.bench.lift import ViewSet, accuracy
from edge.config import Config
from edge.lift3d import Lifter, LimbLengths, WorldLandmarkLifter
from edge.runtime import Manifest

#: Views guarded (1-based, as Pose2Sim names them) and their loose bounds. Measured at the
#: ship (lifter + limb_window 90): PA-MPJPE 61.4 / 57.8 mm, MPJPE 81.2 / 75.7 mm, no swaps.
GUARD_VIEWS = (1, 4)
PA_MPJPE_MAX_MM = 72.0
MPJPE_MAX_MM = 100.0
SWAPPED_MAX = 2


@pytest.fixture(scope="module")
def test_set() -> ViewSet:
    return ViewSet.load()


@pytest.fixture(scope="module")
def default_scores(manifest: Manifest, test_set: ViewSet) -> dict[str, Any]:
    """The default 3D stage's output: the single-frame lifter, limbs steadied per view."""
    mc = Config().models
    assert mc.lifter == "mlp"
    entry = manifest.find("lifter", "single", mc.precision)
    joints = Lifter.load(entry.key, 1, manifest).lift(test_set.kp, test_set.conf).joints
    if mc.limb_window > 0:
        limbs = LimbLengths(mc.limb_window)
        joints = np.concatenate([limbs(joints[i:i + 1], [int(test_set.view[i])])
                                 for i in range(len(joints))])
    return accuracy(joints, test_set)


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
