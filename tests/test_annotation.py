"""Annotation JSON: built from stage results, valid against the shipped schema, joint views."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge.annotation import AXES_3D, Annotation, StageTimings, build_annotation, schema
from edge.sinks import JsonlSink, VideoSink, draw_annotation
from edge.skeleton import BLAZEPOSE_NAMES, COCO17_NAMES
from edge.types import Frame, Poses2D, Poses3D


def _poses(n: int, w: int = 640, h: int = 480) -> tuple[Poses2D, Poses3D]:
    rng = np.random.default_rng(7)
    kp = (rng.random((n, 33, 2)) * [w, h]).astype(np.float32)
    vis = rng.random((n, 33)).astype(np.float32)
    world = (rng.random((n, 33, 3)) - 0.5).astype(np.float32)
    regions = np.tile(np.array([[w / 2, h / 2, 200, 200, 0]], np.float32), (n, 1))
    p2 = Poses2D(kp, np.zeros((n, 33), np.float32), vis, np.full(n, 0.9, np.float32), world,
                 regions, regions.copy())
    return p2, Poses3D(world, BLAZEPOSE_NAMES)


def _build(n: int = 2, **kw: Any) -> Annotation:
    frame = Frame(np.zeros((480, 640, 3), np.uint8), 7, 1_000, 1700000000.5)
    p2, p3 = _poses(n)
    args: dict[str, object] = {
        "device_id": "pi-01", "models": {"detector": "d", "pose2d": "p", "pose3d": "l"},
        "track_ids": np.arange(1, n + 1, dtype=np.int64), "poses": p2, "poses_3d": p3,
        "timings": StageTimings(detect=None, pose2d=10.0, pose3d=0.1, track=0.5, total=11.0)}
    args.update(kw)
    return build_annotation(frame, **args)  # type: ignore[arg-type]


def test_annotation_is_valid_and_normalised() -> None:
    ann = _build()
    jsonschema.Draft202012Validator(schema()).validate(ann.payload)
    p = ann.payload
    assert (p["v"], p["frame_id"], p["device_id"], p["axes_3d"]) == (1, 7, "pi-01", AXES_3D)
    assert p["image"] == {"width": 640, "height": 480}
    assert p["timings_ms"]["detect"] is None
    person = p["persons"][0]
    assert list(person["pose_2d"]) == list(BLAZEPOSE_NAMES)
    xs = [v["x"] for v in person["pose_2d"].values()]
    assert min(xs) >= 0 and max(xs) <= 1
    assert json.loads(ann.to_json()) == p


def test_coco17_view_and_low_visibility_joints_are_null() -> None:
    ann = _build(joints="coco17", min_visibility=0.5)
    jsonschema.Draft202012Validator(schema()).validate(ann.payload)
    person = ann.payload["persons"][0]
    assert list(person["pose_2d"]) == list(COCO17_NAMES)
    for name in COCO17_NAMES:
        hidden = person["confidence"][name] < 0.5
        assert (person["pose_2d"][name] is None) == hidden
        assert (person["pose_3d"][name] is None) == hidden


def test_no_people_and_no_timings() -> None:
    ann = _build(0, track_ids=np.zeros(0, np.int64), timings=None)
    jsonschema.Draft202012Validator(schema()).validate(ann.payload)
    assert ann.payload["persons"] == [] and "timings_ms" not in ann.payload


def test_unpublished_timings_still_reach_the_video() -> None:
    """Every-frame mode keeps timings out of the JSON (reproducible) but the annotated video
    still shows the per-stage rates."""
    quiet = _build(publish_timings=False)
    assert "timings_ms" not in quiet.payload and quiet.timings is not None
    jsonschema.Draft202012Validator(schema()).validate(quiet.payload)
    frame = np.zeros((480, 640, 3), np.uint8)
    with_rates = draw_annotation(frame, quiet)
    without = draw_annotation(frame, Annotation(quiet.frame_id, quiet.ts, quiet.n_persons,
                                                quiet.payload, None))
    assert (with_rates[:60] != without[:60]).any()  # the rates line at the top differs


@pytest.mark.parametrize(("kw", "match"), [
    ({"track_ids": np.arange(3, dtype=np.int64)}, r"track_ids must have shape \(2,\)"),
    ({"models": {"detector": "d"}}, r"models must name"),
])
def test_misuse(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _build(**kw)


def test_schema_rejects_what_it_should() -> None:
    v = jsonschema.Draft202012Validator(schema())
    bad = dict(_build().payload)
    bad["v"] = 2
    assert not v.is_valid(bad)
    bad = json.loads(_build().to_json())
    bad["persons"][0]["pose_2d"]["tail"] = {"x": 0, "y": 0}
    assert not v.is_valid(bad)


def test_jsonl_and_video_sinks(tmp_path: Path) -> None:
    frame = Frame(np.zeros((480, 640, 3), np.uint8), 7, 1_000, 0.0)
    ann = _build()
    jsonl = JsonlSink(tmp_path / "a" / "annotations.jsonl")
    jsonl.write(frame, ann)
    # flushed line by line: readable before close
    assert json.loads((tmp_path / "a" / "annotations.jsonl").read_text()) == ann.payload
    jsonl.close()
    jsonl.close()
    drawn = draw_annotation(frame.image, ann)
    assert drawn.shape == frame.image.shape and drawn.any() and not frame.image.any()
    video = VideoSink(tmp_path / "v.mp4", 30.0)
    for _ in range(3):
        video.write(frame, ann)
    video.close()
    assert (tmp_path / "v.mp4").stat().st_size > 1000
