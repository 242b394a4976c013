"""The causal temporal lifter (models/lifter_temporal_int8.tflite): end to end on the demo
clip, tracks shorter than its window, and its fallback to the single-frame lifter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge import cli
from edge.config import Config
from edge.lift3d import N_JOINTS, Lifter, TemporalLifter
from edge.runtime import Manifest
from edge.sources import DEMO_CLIP

#: Demo clip frames 110-139 (both people are in view from ~120).
FIRST, LAST = 110, 140


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames of the demo clip, full size."""
    out = tmp_path_factory.mktemp("tclip") / "clip.mp4"
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    writer: Any = None
    try:
        for i in range(LAST):
            ok, frame = cap.read()
            assert ok, f"{DEMO_CLIP} ended at frame {i}"
            if i < FIRST:
                continue
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), 30.0,
                                         (frame.shape[1], frame.shape[0]))
            writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    return out


@pytest.fixture(scope="module")
def temporal(manifest: Manifest) -> TemporalLifter:
    return TemporalLifter.load("lifter_temporal_int8", 1, manifest)


def test_temporal_lifter_runs_end_to_end_on_the_demo_clip(manifest: Manifest, short_clip: Path,
                                                          tmp_path: Path) -> None:
    config = Config.model_validate({
        "models": {"lifter": "temporal", "dir": str(manifest.folder), "landmark": "lite"},
        "source": {"uri": str(short_clip)}, "output": {"dir": str(tmp_path), "video": False},
        "scheduler": {"mode": "every-frame"}})
    assert cli.run(config, progress=False) == 0
    rows = [json.loads(x) for x in (tmp_path / "annotations.jsonl").read_text().splitlines()]
    assert len(rows) == LAST - FIRST
    people = [p for r in rows for p in r["persons"]]
    assert len(people) >= 20
    for p in people:
        pose = p["pose_3d"]
        assert len(pose) == N_JOINTS
        seen = [v for v in pose.values() if v is not None]
        assert len(seen) >= 8
        pts = np.array([[v[a] for a in "xyz"] for v in seen])
        assert np.all(np.isfinite(pts))
        assert 0.2 < np.abs(pts).max() < 1.5  # metric, root-relative
    assert rows[0]["models"]["pose3d"] == "lifter_temporal_int8"


def _walk(n: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """n frames of a plausible moving 2D pose (pixels) and full confidence."""
    base = np.array([[0, -160], [-8, -168], [8, -168], [-18, -164], [18, -164], [-40, -120],
                     [40, -120], [-48, -60], [48, -60], [-50, -5], [50, -5], [-22, 0],
                     [22, 0], [-26, 85], [26, 85], [-28, 170], [28, 170]], np.float64)
    t = np.arange(n)[:, None]
    kp = base[None] + np.stack([8 * np.sin(0.3 * t + np.arange(17) / 3.0),
                                np.broadcast_to(4 * np.cos(0.3 * t), (n, 17))], -1) + [400, 300]
    return kp.astype(np.float32), np.ones((n, N_JOINTS), np.float32)


def test_tracks_shorter_than_the_window_use_the_single_frame_lifter(
        temporal: TemporalLifter, manifest: Manifest) -> None:
    k = temporal.frames
    assert k > 1 and temporal.fallback is not None
    single = Lifter.load("lifter_single_int8", 1, manifest)
    kp, conf = _walk(k + 2)
    temporal.reset()
    outs = [temporal.lift(kp[i:i + 1], conf[i:i + 1], [7]).joints[0] for i in range(k + 2)]
    for i in range(k - 1):
        np.testing.assert_array_equal(outs[i], single.lift(kp[i:i + 1], conf[i:i + 1]).joints[0])
    # from the K-th frame on, the temporal network (and it sees the motion)
    assert not np.array_equal(outs[k - 1], single.lift(kp[k - 1:k], conf[k - 1:k]).joints[0])
    assert np.all(np.isfinite(np.stack(outs)))


def test_tracks_come_and_go(temporal: TemporalLifter) -> None:
    """One-frame tracks, a track that leaves and comes back (history restarts), no people."""
    kp, conf = _walk(6)
    temporal.reset()
    assert temporal.lift(np.zeros((0, 17, 2)), np.zeros((0, 17)), []).joints.shape == (0, 17, 3)
    a = temporal.lift(kp[:2], conf[:2], [1, 2]).joints
    b = temporal.lift(kp[2:3], conf[2:3], [3]).joints  # 1 and 2 gone
    c = temporal.lift(kp[:1], conf[:1], [1]).joints  # 1 is back: a new track
    np.testing.assert_array_equal(c[0], a[0])
    assert b.shape == (1, 17, 3)
    with pytest.raises(ValueError, match="track ids"):
        temporal.lift(kp[:2], conf[:2], [1])


def test_without_fallback_the_first_frame_fills_the_window(manifest: Manifest) -> None:
    t = TemporalLifter.load("lifter_temporal_int8", 1, manifest, fallback_key=None)
    kp, conf = _walk(1)
    out = t.lift(kp, conf, [0]).joints
    assert out.shape == (1, 17, 3) and np.all(np.isfinite(out))
