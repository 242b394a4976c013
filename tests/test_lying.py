"""People lying on the floor of an upright stream (a fall): the crowd benchmark's lying people.

A real person of the demo clip (the woman of frame 120, her COCO-17 keypoints from the shipped
detector and landmark model) is cut out with her own background and pasted turned a quarter
turn onto the floor of frame 0; the benchmark's ground truth must follow the turn, measure
her by her body's length, and score lying people apart from upright ones.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import DEMO_CLIP

from bench.crowd import score
from bench.crowd.compose import Placement, compose, pasted_extent
from bench.crowd.cutouts import Bank, Cutout
from bench.crowd.generate import Scenes, person_json
from bench.crowd.generate import main as generate_main
from edge.config import parse_config
from edge.detect.tiles import TiledDetector, turned_detections
from edge.geometry import box_iou
from edge.pipeline import build_pipeline
from edge.runtime import Manifest
from edge.skeleton import COCO17_FROM_BLAZEPOSE
from edge.types import U8, DetectorResult, Frame

#: Where she lies in frame 0 (1768x994): on the ground left of the utility box.
FLOOR_XY = (120, 700)


@pytest.fixture(scope="module")
def woman(demo_frames: dict[int, U8], manifest: Manifest) -> Cutout:
    """The woman of demo frame 120 as a cutout: her keypoint box grown by 15 %, all opaque."""
    pipeline = build_pipeline(parse_config({"models": {"dir": str(manifest.folder),
                                                       "threads": 1}}), mode="image")
    image = demo_frames[120]
    dets = pipeline.detector(image)
    poses = pipeline.core.landmarker(image, dets.regions)
    # She walks in front of the box, lower in the frame than the man standing on it.
    best = int(np.argmax(np.where(poses.presence > 0.9, poses.keypoints[:, :, 1].max(1), -1)))
    kp = poses.keypoints[best][list(COCO17_FROM_BLAZEPOSE)].astype(np.float64)
    lo, hi = kp.min(0), kp.max(0)
    grow = 0.15 * (hi - lo)
    x1, y1 = np.floor(lo - grow).astype(int)
    x2, y2 = np.ceil(hi + grow).astype(int)
    patch = image[y1:y2, x1:x2]
    bgra = np.dstack([patch, np.full(patch.shape[:2], 255, np.uint8)])
    assert 250 < patch.shape[0] < 600, patch.shape  # she is a few hundred px tall
    return Cutout(np.ascontiguousarray(bgra), (kp - [x1, y1]).astype(np.float32),
                  np.ones(17, bool), 0, 0, 120, 1.0)


@pytest.mark.parametrize("turn", [90, -90])
def test_a_turned_person_keeps_her_keypoints_on_her_pixels(
        woman: Cutout, demo_frames: dict[int, U8], turn: int) -> None:
    """Turned a quarter turn, each keypoint lands on the very pixel it marked upright (the
    turn is exact on the pixel grid), her box is as wide as she was tall, and her ``height``
    is her body's length, as an upright person's is."""
    frame0 = demo_frames[0]
    h0, w0 = woman.bgra.shape[:2]
    place = Placement(woman, 1.0, *FLOOR_XY, identity=1, turn=turn)
    assert pasted_extent(place) == (h0, w0)
    image, (person,) = compose(frame0, [place])
    assert person.height == h0
    assert tuple(person.bbox[2:]) == (h0, w0)
    src = np.round(woman.keypoints).astype(int)
    dst = np.round(person.keypoints[:, :2]).astype(int)
    assert (person.keypoints[:, 2] == 2).all()
    for (sx, sy), (dx, dy) in zip(src, dst, strict=True):
        assert (image[dy, dx] == woman.bgra[sy, sx, :3]).all(), (turn, sx, sy, dx, dy)
    # Head towards the right for a clockwise turn, towards the left the other way.
    nose, hips = person.keypoints[0, 0], person.keypoints[[11, 12], 0].mean()
    assert (nose > hips) == (turn == 90)
    record = person_json(person, ["sports2d_demo"])
    assert record["lying"] is True and record["height"] == h0
    upright, _ = compose(frame0, [Placement(woman, 1.0, *FLOOR_XY, identity=1)])
    assert "lying" not in person_json(compose(frame0, [Placement(woman, 1.0, *FLOOR_XY)])[1][0],
                                      ["sports2d_demo"])
    assert not (upright == image).all()
    with pytest.raises(ValueError, match="turn"):
        Placement(woman, 1.0, 0, 0, turn=45)


def _gt(people: list[dict[str, Any]]) -> list[score.Person]:
    return [score._gt_person(p, 1768, 994) for p in people]


def test_lying_people_are_scored_apart(woman: Cutout, demo_frames: dict[int, U8]) -> None:
    """With someone lying, the figures hold recall for lying and for upright people apart,
    each bucketed by body length; the ground truth given back as predictions finds all."""
    frame0 = demo_frames[0]
    _, people = compose(frame0, [Placement(woman, 0.5, 1000, 60, identity=1),
                                 Placement(woman, 1.0, *FLOOR_XY, identity=2, turn=-90)])
    gt = _gt([person_json(p, ["demo"]) for p in people])
    assert [p.lying for p in gt] == [False, True]
    assert gt[1].height == woman.bgra.shape[0] and gt[1].height > 160
    perfect = score.score_frames([gt], [gt])
    assert perfect["recall_lying"]["160-400"] == {"found": 1, "total": 1, "recall": 1.0}
    assert perfect["recall_upright"]["all"]["recall"] == 1.0
    only_upright = score.score_frames([gt], [[gt[0]]])
    assert only_upright["recall_lying"]["all"]["recall"] == 0.0
    assert only_upright["recall_upright"]["all"]["recall"] == 1.0
    # No one lying: the figures are as before (no posture split).
    assert "recall_lying" not in score.score_frames([gt[:1]], [gt[:1]])


def _where(placements: list[Placement]) -> list[tuple[int, int, int, float, int]]:
    return [(p.identity, p.x, p.y, p.scale, p.turn) for p in placements]


def test_walking_clips_can_hold_people_lying_still(woman: Cutout) -> None:
    """``lying`` = 1: every person of a clip lies still on the floor, turned either way, whole
    inside the frame's width, body length within the drawn heights; 0 draws as before."""
    bank = Bank([woman] * 25, ["sports2d_demo"], [30.0])
    for k in range(2):
        frames = Scenes(bank, np.random.default_rng(k), 0.35, lying=1.0).walkers(
            1280, 720, 4, 5, 30.0)
        for placements in frames:
            assert _where(placements) == _where(frames[0])
            for p in placements:
                w, h = pasted_extent(p)
                assert p.turn in (90, -90) and w > h
                assert p.x >= 0 and p.x + w <= 1280
                assert 40 <= p.scale * woman.mask_height <= 400
    plain = Scenes(bank, np.random.default_rng(0), 0.35).walkers(1280, 720, 4, 5, 30.0)
    assert all(p.turn == 0 for f in plain for p in f)
    again = Scenes(bank, np.random.default_rng(0), 0.35, lying=0.0).walkers(1280, 720, 4, 5, 30.0)
    assert [_where(f) for f in plain] == [_where(f) for f in again]
    assert math.isclose(woman.scale, 1.0)


def test_generate_refuses_a_share_outside_0_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate_main(["--lying", "1.5", "--frames", "0", "--clips", "0"]) == 2
    assert "--lying" in capsys.readouterr().err


def test_a_standing_man_seen_sideways_is_not_a_second_person(manifest: Manifest) -> None:
    """The demo clip's man stands on the box (frames 0-21, tracked); NanoDet on the frame
    turned a quarter turn (the view that finds people lying) boxes him sideways with the
    building beside him, and the landmark model draws a lying body across that region
    (presence 0.71). That detection is him, not a second person: nobody new is published."""
    pipe = build_pipeline(parse_config({"models": {"dir": str(manifest.folder), "threads": 1}}),
                          mode="every-frame", timings=False)
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    try:
        images: list[U8] = [np.ascontiguousarray(cap.read()[1], np.uint8) for _ in range(27)]
    finally:
        cap.release()
    counts: list[int] = []
    last: dict[str, Any] = {}
    for i, image in enumerate(images):
        frame = Frame(image, i, (i + 1) * 33_333_333, i / 30)
        if i == 21:
            assert isinstance(pipe.detector, TiledDetector)
            found = turned_detections(pipe.detector.stream[0], image, 1)  # NanoDet, turned
            b = last["persons"][0]["bbox"]  # the man's box, normalised
            man = np.array([b["x1"], b["y1"], b["x2"], b["y2"]]) * [1768, 994, 1768, 994]
            assert len(found) == 1 and abs(found.regions[0, 4]) > 1.5
            assert box_iou(man[None], found.boxes, over="first")[0, 0] > 0.5
            detected: DetectorResult | None = DetectorResult(found, i, i / 30, 0.0)
        else:
            detected = pipe.detect(frame) if i % 3 == 0 else None
        last = pipe.core.step(frame, detected).annotation.payload
        counts.append(len(last["persons"]))
    assert counts[15:21] == [1] * 6  # the man, tracked before the sideways view
    assert counts[21:] == [1] * 6, counts[21:]


def test_a_woman_lying_on_the_floor_is_found_in_a_stream(
        woman: Cutout, demo_frames: dict[int, U8], manifest: Manifest) -> None:
    """The woman, at 0.6 of her size (282 px long), lying head to the left (turned clockwise)
    on the grass of frame 0: in a stream neither detector boxes her upright, whatever the
    views; NanoDet on the frame turned a quarter turn does, and she is published within the
    rotation (found at frame 22; never in 40 frames without the turned views)."""
    image, (her,) = compose(demo_frames[0], [Placement(woman, 0.6, 700, 800, identity=1,
                                                       turn=90)])
    x, y, w, h = her.bbox
    pipe = build_pipeline(parse_config({"models": {"dir": str(manifest.folder), "threads": 1}}),
                          mode="every-frame", timings=False)
    found = []
    for i in range(40):
        frame = Frame(image, i, (i + 1) * 33_333_333, i / 30)
        detected = pipe.detect(frame) if i % 3 == 0 else None
        for p in pipe.core.step(frame, detected).annotation.payload["persons"]:
            b = p["bbox"]
            box = np.array([b["x1"], b["y1"], b["x2"], b["y2"]]) * [1768, 994, 1768, 994]
            if box_iou(box[None], np.array([[x, y, x + w, y + h]]))[0, 0] >= 0.5:
                found.append(i)
    assert found and found[-1] == 39, found
