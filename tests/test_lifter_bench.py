"""The figures of edge/bench/lift.py (``edge-bench --lift``): swapped frames, limb-length CV and
joint-angle jitter, on poses whose answer is known."""

from __future__ import annotations

import numpy as np
from test_lift3d import SIT, WALK

from edge.bench.lift import angle_jitter, format_markdown, joint_angles, limb_cv, rows, swapped
from edge.lift3d import COCO17_FLIP


def _exchange(pose: np.ndarray, joints: list[int]) -> np.ndarray:
    out = pose.copy()
    out[joints] = pose[[COCO17_FLIP[j] for j in joints]]
    return out


def test_swapped_counts_exchanged_arms_or_legs_only() -> None:
    gt = np.stack([WALK, SIT, WALK])
    pred = gt + np.random.default_rng(0).normal(0, 0.01, gt.shape)
    pred[1] = _exchange(pred[1], [7, 8, 9, 10])  # arms
    pred[2] = _exchange(pred[2], [13, 14, 15, 16])  # legs
    assert swapped(gt, gt).tolist() == [False, False, False]
    assert swapped(pred, gt).tolist() == [False, True, True]


def test_limb_cv_and_angle_jitter() -> None:
    steady = np.stack([WALK] * 12)
    assert limb_cv(steady, np.zeros(12))[0] < 1e-6
    scaled = steady * np.linspace(0.8, 1.2, 12)[:, None, None]
    cv = limb_cv(scaled, np.zeros(12))[0]
    assert 10 < cv < 15  # std/mean of 0.8..1.2 is 12.6 %
    assert limb_cv(steady[:5], np.zeros(5)) == {}  # short tracks left out
    assert angle_jitter(steady, np.zeros(12), np.arange(12)) == 0.0
    ang = joint_angles(np.stack([WALK, SIT]))
    assert ang.shape == (2, 4) and np.all((ang >= 0) & (ang <= 180))
    # frames of two tracks, or with a gap, are not compared
    two = np.stack([WALK, SIT])
    assert np.isnan(angle_jitter(two, np.array([0, 1]), np.array([0, 1])))
    assert np.isnan(angle_jitter(two, np.array([0, 0]), np.array([0, 2])))
    assert angle_jitter(two, np.array([0, 0]), np.array([0, 1])) > 1.0


def test_report_rows() -> None:
    view = {"view": 1, "frames": 10, "pa_mpjpe_mm": 61.0, "mpjpe_mm": 80.0,
            "swapped_frames": 0}
    result = {"test_set": "t", "triangulation_reproj_px": 17.0, "sources": {"x": {
        "views": [view], "mean": {"pa_mpjpe_mm": 61.0, "mpjpe_mm": 80.0},
        "demo_limb_cv_pct": {"0": 3.7}, "demo_angle_jitter_deg_per_frame": 3.1}}}
    r = rows(result)
    assert r[1] == ["x", "61 (61.0)", "80.0", "0", "3.7", "3.10", "-"]
    assert "| x | 61 (61.0) |" in format_markdown(result)
