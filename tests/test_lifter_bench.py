"""The figures of edge/bench/lift.py (``edge-bench --lift``): swapped frames, limb-length CV and
joint-angle jitter, on poses whose answer is known."""

from __future__ import annotations

from typing import Any

import numpy as np
from test_lift3d import SIT, WALK

from bench.fuse_data import scene
from edge.bench.lift import (
    ViewSet,
    accuracy,
    angle_jitter,
    format_markdown,
    fused_truth,
    joint_angles,
    limb_cv,
    rows,
    swapped,
)
from edge.lift3d import COCO17_FLIP
from lifter.pose2sim import read_qca, view_frames


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
    result: dict[str, Any] = {"test_set": "t", "triangulation_reproj_px": 17.0, "sources": {"x": {
        "views": [view], "mean": {"pa_mpjpe_mm": 61.0, "mpjpe_mm": 80.0},
        "demo_limb_cv_pct": {"0": 3.7}, "demo_angle_jitter_deg_per_frame": 3.1}}}
    r = rows(result)
    assert r[1] == ["x", "61 (61.0)", "80.0", "0", "-", "-", "-", "-", "-", "-", "3.7", "3.10",
                    "-"]
    assert "| x | 61 (61.0) |" in format_markdown(result)
    # The second reference (the fused 3D) in its own columns and a note.
    fused_view = {**view, "pa_mpjpe_mm": 70.0, "mpjpe_mm": 95.0, "swapped_frames": 1}
    result["sources"]["x"]["vs_fused"] = {"views": [fused_view],
                                          "mean": {"pa_mpjpe_mm": 70.0, "mpjpe_mm": 95.0}}
    result["fused_reference"] = {"what": "fused", "rows": 9, "of_rows": 10,
                                 "first_reference_scored": {"pa_mpjpe_mm": 30.0, "mpjpe_mm": 40.0}}
    assert rows(result)[1][4:7] == ["70 (70.0)", "95.0", "1"]
    md = format_markdown(result)
    assert "| 61 (61.0) | 80.0 | 0 | 70 (70.0) | 95.0 | 1 |" in md
    assert "9 of 10 rows" in md and "PA-MPJPE 30.0 mm" in md
    # The development set (Demo_MultiPerson) in its own columns.
    result["sources"]["x"]["dev_multiperson"] = {"views": [{**view, "swapped_frames": 2}],
                                                 "mean": {"pa_mpjpe_mm": 61.0, "mpjpe_mm": 80.0}}
    assert rows(result)[1][7:10] == ["61 (61.0)", "80.0", "2"]


def test_fused_reference_in_the_test_views() -> None:
    # The second reference: the fusion's 3D of the test views' frames, in each view's look-at
    # frame, root-relative, as the first; the two triangulations agree within a few cm.
    ts = ViewSet.load()
    fused = fused_truth(ts)
    assert fused.shape == ts.gt.shape
    ok: np.ndarray = np.asarray(np.isfinite(fused).all(axis=(1, 2)))
    assert ok.mean() > 0.95
    np.testing.assert_allclose(0.5 * (fused[ok, 11] + fused[ok, 12]), 0.0, atol=1e-9)
    a = accuracy(ts.gt, ts, fused)  # measured 41.7 mm PA-MPJPE, 46.4 mm MPJPE
    assert [v["frames"] for v in a["views"]] == [int(ok[ts.view == v].sum()) for v in range(4)]
    assert a["mean"]["pa_mpjpe_mm"] < 60 and a["mean"]["mpjpe_mm"] < 70, a
    # The same frame in another view's frame is the same pose up to a rotation; a shifted
    # frame index is a different pose (the rows are matched by frame, not by position).
    shifted = ViewSet(ts.kp, ts.conf, ts.world, ts.gt, ts.view, ts.reproj_px, ts.frame + 20)
    assert accuracy(ts.gt, ts, fused_truth(shifted))["mean"]["mpjpe_mm"] > 1.5 * a["mean"][
        "mpjpe_mm"]


def test_view_frames_are_root_relative_rigid_and_upright() -> None:
    cams = read_qca(scene("single").calib)
    pose = WALK[None].astype(np.float64) + np.array([0.3, -0.2, 1.0])
    per = view_frames(cams, pose)
    assert per.shape == (4, 1, 17, 3)
    for v, cam in enumerate(cams):
        np.testing.assert_allclose(0.5 * (per[v, 0, 11] + per[v, 0, 12]), 0.0, atol=1e-12)
        # the smallest rotation from the camera's frame: the image's axes roughly kept
        xc = cam.to_camera(pose[0])
        xc = xc - 0.5 * (xc[11] + xc[12])
        cos = (per[v, 0] * xc).sum(-1) / np.linalg.norm(xc, axis=-1) / np.linalg.norm(
            per[v, 0], axis=-1)
        assert np.nanmin(cos) > 0.8
        # a rigid motion of the pose: distances between joints kept
        d0 = np.linalg.norm(pose[0, :, None] - pose[0, None], axis=-1)
        d1 = np.linalg.norm(per[v, 0, :, None] - per[v, 0, None], axis=-1)
        np.testing.assert_allclose(d0, d1, atol=1e-9)
    nan = pose.copy()
    nan[0, 3] = np.nan
    assert np.isnan(view_frames(cams, nan)[:, 0, 3]).all()
