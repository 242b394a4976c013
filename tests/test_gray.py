"""Gray (night / IR) streams: told apart from colour, detected without BlazePose's detector,
and kept at a lower landmark presence.

Real frames of the demo clip made gray with OpenCV (three equal channels, and through the mp4v
codec, which leaves a constant tint), real models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from test_pipeline import N_FRAMES, presence_recall
from test_track import dets, poses

from bench.crowd import looks
from bench.replay import read_frames
from edge import cli
from edge.config import Config
from edge.detect import PoseDetector
from edge.detect.box import BoxPersonDetector
from edge.detect.levels import GrayWatch, chroma_spread
from edge.detect.tiles import TiledDetector
from edge.pipeline import GRAY_PRESENCE, GRAY_SAMPLE_S, build_detector, build_pipeline
from edge.runtime import Manifest
from edge.sources import DEMO_CLIP
from edge.track import Tracker
from edge.types import U8, Frame


def _gray(image: U8) -> U8:
    """The frame as a night camera delivers it: gray, as three equal channels."""
    g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.asarray(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR), np.uint8)


def _through_mp4v(frames: list[U8], folder: Path) -> list[U8]:
    """The frames written as an mp4v clip and read back (the codec's colour conversion)."""
    h, w = frames[0].shape[:2]
    path = folder / "gray.mp4"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (w, h))
    assert out.isOpened(), f"OpenCV cannot write {path}"
    for f in frames:
        out.write(f)
    out.release()
    back = [image for _, image in read_frames(path)]
    assert len(back) == len(frames), f"{path}: {len(back)} of {len(frames)} frames read back"
    return back


def test_chroma_spread_tells_gray_frames_from_colour(demo_frames: dict[int, U8],
                                                     tmp_path: Path) -> None:
    """Colour frames spread far over the threshold, gray ones (also after mp4v or JPEG, whose
    colour conversion leaves a constant tint, not a spread) stay at 0."""
    limit = GrayWatch().max_spread
    colour = list(demo_frames.values())
    gray = [_gray(f) for f in colour]
    jpeg = [np.asarray(cv2.imdecode(cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, 50])[1],
                                    cv2.IMREAD_COLOR), np.uint8) for g in gray]
    coded = _through_mp4v(gray, tmp_path)
    assert all(chroma_spread(f) > 4 * limit for f in colour), [chroma_spread(f) for f in colour]
    for name, frames in (("gray", gray), ("jpeg", jpeg), ("mp4v", coded)):
        spreads = [chroma_spread(f) for f in frames]
        assert all(s <= limit / 2 for s in spreads), (name, spreads)
    # the codec's tint: the channels differ, but by the same amount everywhere
    assert any(not np.array_equal(f[..., 0], f[..., 1]) for f in coded)


def test_gray_watch_decides_over_time(demo_frames: dict[int, U8]) -> None:
    """The first frame decides; a stray frame against the verdict does not flip it, three in a
    row do; reset forgets."""
    colour = demo_frames[120]
    gray = _gray(colour)
    watch = GrayWatch()
    assert not watch.gray
    verdicts = [watch.update(f) for f in (gray, gray, colour, gray, colour, colour, colour,
                                          gray, colour)]
    assert verdicts == [True, True, True, True, True, True, False, False, False]
    watch.reset()
    assert not watch.gray and watch.update(gray)


@pytest.mark.parametrize(("field", "value"), [("max_spread", -1.0), ("max_spread", float("nan")),
                                              ("switch_after", 0)])
def test_gray_watch_refuses_bad_settings(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"GrayWatch.{field}"):
        if field == "switch_after":
            GrayWatch(switch_after=int(value))
        else:
            GrayWatch(max_spread=value)


def test_gray_stream_gives_blazepose_slots_to_the_box_detector(
        manifest: Manifest, demo_frames: dict[int, U8], monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream of gray frames: every view of the rotation runs NanoDet (the whole frame in
    BlazePose's detector's slots), and each run is still one model call; a colour stream's
    rotation is as before: BlazePose's detector in its slots. Still images and the box
    detector alone have no watch."""
    config = Config.model_validate({"models": {"dir": str(manifest.folder), "threads": 1}})
    det, _ = build_detector(config, manifest, "every-frame")
    assert isinstance(det, TiledDetector) and det.gray_watch is not None
    box, pose, *_ = det.stream  # (and NanoDet turned either way, BlazePose again)
    assert isinstance(box, BoxPersonDetector) and isinstance(pose, PoseDetector)
    calls: list[str] = []
    for name, d in (("box", box), ("pose", pose)):
        run = d.model.run

        def counted(x: Any, name: str = name, run: Any = run) -> Any:
            calls.append(name)
            return run(x)
        monkeypatch.setattr(d.model, "run", counted)

    colour = demo_frames[120]
    gray = _gray(colour)
    h, w = colour.shape[:2]
    views = det.views(w, h)
    n_tiles = len(det.tiles(w, h))
    slot = views.index(-2)  # BlazePose's detector's first slot
    for _ in views:
        det(gray)
    assert calls == ["box"] * len(views)
    # BlazePose's slot, gray: NanoDet's whole-frame detections. On this frame BlazePose's
    # detector finds the woman in colour (0.95) and nobody in gray; NanoDet finds her in both
    # (0.72, 0.61).
    assert len(pose(colour)) == 1 and len(pose(gray)) == 0
    det.reset()
    for _ in range(slot):
        det(gray)
    found = det(gray)
    assert len(found) == 1 and np.array_equal(found.boxes, box(gray).boxes)
    # a colour stream (reset: its first frame decides): the usual rotation
    det.reset()
    det(colour)
    assert det.gray_watch is not None and not det.gray_watch.gray
    calls.clear()
    for _ in views:
        det(colour)
    # BlazePose's detector in every other extra slot, NanoDet turned in the others
    n_pose = sum(t % 4 in (0, 2) for t in range(n_tiles))
    assert calls.count("pose") == n_pose and calls.count("box") == len(views) - n_pose
    still, _ = build_detector(config, manifest, "image")
    assert isinstance(still, TiledDetector) and still.gray_watch is None
    alone = Config.model_validate({"models": {"dir": str(manifest.folder), "threads": 1},
                                   "detector": {"kind": "box"}})
    box_only, _ = build_detector(alone, manifest, "every-frame")
    assert isinstance(box_only, TiledDetector) and box_only.gray_watch is None


@pytest.mark.parametrize(("min_presence", "left"), [(None, [1, 2]), (0.4, [2]), (0.3, [])])
def test_tracker_takes_a_ticks_own_presence_threshold(min_presence: float | None,
                                                      left: list[int]) -> None:
    """``Tracker.update(min_presence=...)`` (a gray stream's lower threshold) replaces the
    configured one (0.5) for that tick only."""
    tracker = Tracker()
    tracker.add_detections(dets([(200.0, 300.0), (700.0, 300.0)]), 0.0)
    tracker.tracks()
    ev = tracker.update(poses([(200.0, 300.0), (700.0, 300.0)], [0.45, 0.35]), 0.1,
                        min_presence=min_presence)
    assert [e.track_id for e in ev if e.kind == "left"] == left
    assert tracker.config.min_presence == 0.5


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_tracker_refuses_a_bad_presence_threshold(value: float) -> None:
    tracker = Tracker()
    tracker.add_detections(dets([(200.0, 300.0)]), 0.0)
    tracker.tracks()
    with pytest.raises(ValueError, match="min_presence"):
        tracker.update(poses([(200.0, 300.0)], [0.9]), 0.1, min_presence=value)


def test_core_asks_less_presence_only_while_the_stream_is_gray(
        manifest: Manifest, demo_frames: dict[int, U8]) -> None:
    """A stream's core judges a frame every ``GRAY_SAMPLE_S`` (its own :class:`GrayWatch`):
    gray frames lower the presence a pose needs to ``GRAY_PRESENCE`` of ``min_presence``,
    three colour looks in a row raise it again, frames between looks keep the verdict (the
    look costs 0.3 ms: it was taken on every frame), reset forgets. Still images have no
    watch."""
    config = Config.model_validate({"models": {"dir": str(manifest.folder), "threads": 1}})
    core = build_pipeline(config, manifest=manifest, mode="every-frame").core
    base = core.tracker.config.min_presence
    colour = demo_frames[120]
    gray = _gray(colour)
    look = round(GRAY_SAMPLE_S * 1e9)
    seen = []
    for k, image in enumerate((gray, gray, colour, colour, colour, gray)):
        core.step(Frame(image, k, (k + 1) * look, (k + 1) * look / 1e9), None)
        seen.append(core.min_presence)
    low = base * GRAY_PRESENCE
    assert low < base
    assert seen == [low, low, low, low, base, base]
    core.reset()
    assert core.min_presence == base
    between = []  # a gray look, then colour frames 33 ms apart within one look's interval
    for k, image in enumerate((gray, colour, colour, colour, colour)):
        core.step(Frame(image, 10 + k, 10 * look + k * 33_000_000, 0.0), None)
        between.append(core.min_presence)
    assert between == [low] * 5
    still = build_pipeline(config, manifest=manifest, mode="image").core
    assert still.gray_watch is None
    still.step(Frame(gray, 0, 1, 0.0), None)
    assert still.min_presence == base


def test_gray_demo_clip_keeps_its_people(manifest: Manifest, tmp_path: Path) -> None:
    """The demo clip as a night camera delivers it (gray, through mp4v), every frame: the
    landmark model is less sure of the man and the woman on gray crops, and the box detectors
    find them less often. Measured, of 386 labelled person-frames: 356 (0.922) as colour
    streams are processed; 359 (0.930) with the lower presence threshold of gray streams
    (``GRAY_PRESENCE``); 373 (0.966) when a person whose pose is lost for a frame also coasts
    (``GRAY_COAST``), as in colour (372). No frame with more people than present."""
    clip = tmp_path / "gray.mp4"
    assert looks.clip(DEMO_CLIP, clip, "gray") == N_FRAMES
    out = tmp_path / "out"
    config = Config.model_validate({
        "models": {"dir": str(manifest.folder)}, "scheduler": {"mode": "every-frame"},
        "source": {"uri": str(clip)}, "output": {"dir": str(out)}})
    assert cli.run(config, progress=False) == 0
    rows = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    assert len(rows) == N_FRAMES
    recall, extra = presence_recall(rows)
    assert recall >= 0.96, f"presence recall {recall:.3f} ({recall * 386:.0f} of 386)"
    assert extra == [], f"more people than present in frames {extra}"
