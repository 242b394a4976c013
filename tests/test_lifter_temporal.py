"""The causal temporal lifter (models/lifter_temporal_int8.tflite): end to end on the demo
clip, tracks shorter than its window, and its fallback to the single-frame lifter; the TFLite
form of the temporal convolutions; the camera-aware input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from testdata import demo_segment

from edge import cli
from edge.config import Config
from edge.lift3d import N_JOINTS, Lifter, TemporalLifter
from edge.runtime import Manifest
from lifter.camera import camera_features
from lifter.tflite_writer import Dense, TemporalConv, write_tflite

#: Demo clip frames 110-139 (both people are in view from ~120).
FIRST, LAST = 110, 140


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames of the demo clip, full size."""
    return demo_segment(tmp_path_factory.mktemp("tclip") / "clip.mp4", FIRST, LAST)


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


def _conv_reference(net: TemporalConv, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The temporal convolutions in plain numpy, written from the definition: at each level,
    a kernel-3 stride-3 convolution over time (oldest step first), ReLU, and a residual 1x1
    convolution with ReLU."""
    b = len(x)
    h = x.reshape(b, 3 ** len(net.levels), -1).astype(np.float64)  # (batch, time, channels)
    for conv, mix in net.levels:
        t = h.shape[1] // 3
        taps = h.reshape(b, t, 3 * h.shape[2])  # steps 3i, 3i+1, 3i+2 side by side
        h = np.maximum(taps @ conv.weight.T.astype(np.float64) + conv.bias, 0.0)
        h = h + np.maximum(h @ mix.weight.T.astype(np.float64) + mix.bias, 0.0)
    return np.asarray(h[:, 0] @ net.head.weight.T.astype(np.float64) + net.head.bias)


def _dense(rng: np.random.Generator, n_in: int, n_out: int, relu: bool) -> Dense:
    return Dense((rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in))).astype(np.float32),
                 rng.normal(0, 0.1, n_out).astype(np.float32), relu)


@pytest.mark.parametrize("levels", [2, 3])
def test_temporal_convolutions_are_written_exactly(levels: int) -> None:
    """The TFLite graph (RESHAPE + FULLY_CONNECTED + ADD) computes the convolutions, with the
    batch resized, and the output depends on every frame of the window (receptive field K)."""
    rng = np.random.default_rng(levels)
    ch, k = 24, 3 ** levels
    net = TemporalConv(tuple((_dense(rng, 3 * (N_JOINTS * 3 if i == 0 else ch), ch, True),
                              _dense(rng, ch, ch, True)) for i in range(levels)),
                       _dense(rng, ch, N_JOINTS * 3, False))
    interp = Interpreter(model_content=write_tflite(net))
    x = rng.normal(0, 1, (5, k * N_JOINTS * 3)).astype(np.float32)

    def run(batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        inp = interp.get_input_details()[0]
        interp.resize_tensor_input(inp["index"], list(batch.shape))
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], batch)
        interp.invoke()
        return np.asarray(interp.get_tensor(interp.get_output_details()[0]["index"]))

    out = run(x)
    assert out.shape == (5, N_JOINTS * 3)
    np.testing.assert_allclose(out, _conv_reference(net, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run(x[2:3]), out[2:3], rtol=1e-5, atol=1e-5)
    width = N_JOINTS * 3
    for frame in (0, k // 2, k - 1):
        y = x[:1].copy()
        y[0, frame * width:(frame + 1) * width] += 1.0
        assert not np.allclose(run(y), out[:1], atol=1e-4), f"frame {frame} is not seen"


def test_camera_features_follow_the_image_geometry() -> None:
    """Root offset and scale per focal length: unchanged when the image and the camera are
    shifted or zoomed together, x offset negated by a mirror, scale halves with distance."""
    kp, conf = _walk(3)
    principal, focal = np.array([320.0, 240.0]), 800.0
    f0 = camera_features(kp, conf, principal, focal)
    assert f0.shape == (3, 3)
    root = 0.5 * (kp[:, 11] + kp[:, 12])
    np.testing.assert_allclose(f0[:, :2], (root - principal) / focal, rtol=1e-5)
    np.testing.assert_allclose(camera_features(kp * 2 + 50, conf, principal * 2 + 50, 2 * focal),
                               f0, rtol=1e-5, atol=1e-6)
    m = camera_features(kp * [-1, 1], conf, principal * [-1, 1], focal)
    np.testing.assert_allclose(m[:, 0], -f0[:, 0], rtol=1e-5)
    np.testing.assert_allclose(m[:, 1:], f0[:, 1:], rtol=1e-5)
    far = camera_features((kp - root[:, None]) * 0.5 + root[:, None], conf, principal, focal)
    np.testing.assert_allclose(far[:, 2], 0.5 * f0[:, 2], rtol=1e-5)
