"""edge.detect: anchors, letterbox, weighted NMS and regions on small real arrays; the real
detector on real frames; misuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.detect import (
    DetectorConfig,
    Letterbox,
    PoseDetector,
    decode,
    preprocess,
    regions_from_keypoints,
    ssd_anchors,
    weighted_nms,
)
from edge.geometry import box_iou, sigmoid
from edge.runtime import Manifest, load_model
from edge.types import U8

# --- anchors -----------------------------------------------------------------------------------


def test_anchor_count_and_layout() -> None:
    a = ssd_anchors()
    assert a.shape == (2254, 2) and a.dtype == np.float32
    assert 28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6 == 2254
    assert DetectorConfig().num_anchors == 2254


# MediaPipe's SsdAnchorsCalculator: centre = (cell + 0.5) / cells; strides 8, 16 give 28, 14
# cells with 2 anchors each; the three stride-32 layers share a 7x7 grid with 2 x 3 anchors.
@pytest.mark.parametrize(("index", "x", "y"), [
    (0, 0.5 / 28, 0.5 / 28),
    (1, 0.5 / 28, 0.5 / 28),               # second anchor of the same cell
    (2, 1.5 / 28, 0.5 / 28),               # next column
    (2 * 28, 0.5 / 28, 1.5 / 28),          # next row
    (1567, 27.5 / 28, 27.5 / 28),          # last stride-8 anchor
    (1568, 0.5 / 14, 0.5 / 14),            # first stride-16 anchor
    (1568 + 392, 0.5 / 7, 0.5 / 7),        # first stride-32 anchor
    (1568 + 392 + 5, 0.5 / 7, 0.5 / 7),    # 6 anchors per stride-32 cell
    (1568 + 392 + 6, 1.5 / 7, 0.5 / 7),
    (2253, 6.5 / 7, 6.5 / 7),
])
def test_anchor_spot_values(index: int, x: float, y: float) -> None:
    np.testing.assert_allclose(ssd_anchors()[index], [x, y], atol=1e-6)


# --- letterbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("w", "h"), [(1768, 994), (1080, 1920), (224, 224), (641, 13)])
def test_letterbox_round_trip(w: int, h: int) -> None:
    lb = Letterbox.fit(w, h, 224)
    pts = np.array([[0, 0], [w - 1, h - 1], [w / 3, h / 2]], np.float32)
    inp = lb.to_input(pts)
    assert (inp >= -1e-3).all() and (inp <= 224 + 1e-3).all()
    np.testing.assert_allclose(lb.to_frame(inp), pts, atol=1e-3)
    # the long side fills the input, the short side is centred
    assert lb.scale == pytest.approx(224 / max(w, h))
    assert lb.pad_x == pytest.approx((224 - w * lb.scale) / 2)
    assert lb.pad_y == pytest.approx((224 - h * lb.scale) / 2)


def test_preprocess_letterboxes_real_frame(demo_frames: dict[int, U8]) -> None:
    frame = demo_frames[120]
    x, lb = preprocess(frame)
    assert x.shape == (1, 224, 224, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert lb.pad_x == 0 and lb.pad_y == pytest.approx((224 - 994 * 224 / 1768) / 2)
    top = int(lb.pad_y) - 1
    assert (x[0, :top] == -1.0).all() and (x[0, -top:] == -1.0).all()  # black bars
    # a frame pixel lands where the letterbox says, with channels swapped to RGB
    px, py = 884, 497
    ix, iy = np.round(lb.to_input([px, py])).astype(int)
    expect = frame[py - 2:py + 3, px - 2:px + 3].reshape(-1, 3).mean(0)[::-1] / 127.5 - 1
    np.testing.assert_allclose(x[0, iy, ix], expect, atol=0.12)


# --- NMS ---------------------------------------------------------------------------------------


def _kp(*xy: float) -> np.ndarray:
    return np.array(xy, np.float32).reshape(1, 2)


@pytest.mark.parametrize(("boxes", "expected"), [
    (([0, 0, 10, 10], [0, 0, 10, 10]), 1.0),
    (([0, 0, 10, 10], [5, 0, 15, 10]), 50 / 150),
    (([0, 0, 10, 10], [10, 0, 20, 10]), 0.0),        # touching
    (([0, 0, 10, 10], [50, 50, 60, 60]), 0.0),       # far
    (([0, 0, 10, 10], [2, 2, 4, 4]), 4 / 100),       # inside
    (([0, 0, 0, 0], [0, 0, 0, 0]), 0.0),             # empty union
])
def test_iou(boxes: tuple[list[float], list[float]], expected: float) -> None:
    a, b = (np.array(x, np.float32) for x in boxes)
    assert box_iou(a[None], b[None])[0, 0] == pytest.approx(expected)


def test_weighted_nms_averages_overlapping_boxes_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11]], np.float32)
    scores = np.array([0.9, 0.6, 0.3], np.float32)
    kps = np.stack([_kp(0, 0), _kp(3, 0), _kp(0, 6)])
    b, s, k = weighted_nms(boxes, scores, kps, 0.3)
    assert b.shape == (1, 4) and s.tolist() == pytest.approx([0.9])  # the leader's score
    w = scores / scores.sum()
    np.testing.assert_allclose(b[0], (boxes * w[:, None]).sum(0), rtol=1e-6)
    np.testing.assert_allclose(k[0, 0], [0.6 * 3 / 1.8, 0.3 * 6 / 1.8], rtol=1e-6)


def test_weighted_nms_keeps_far_boxes_apart_best_first() -> None:
    boxes = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [1, 1, 11, 11], [0, 100, 10, 110]],
                     np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.5], np.float32)
    kps = np.zeros((4, 1, 2), np.float32)
    b, s, _ = weighted_nms(boxes, scores, kps, 0.3)
    assert s.tolist() == pytest.approx([0.9, 0.8, 0.5])
    np.testing.assert_allclose(b[0], boxes[1])                  # alone: unchanged
    np.testing.assert_allclose(b[1], (boxes[2] * 0.8 + boxes[0] * 0.6) / 1.4, rtol=1e-6)
    np.testing.assert_allclose(b[2], boxes[3])


@pytest.mark.parametrize(("threshold", "n_out"), [(0.3, 2), (0.0, 1), (0.99, 3)])
def test_weighted_nms_threshold_is_strict(threshold: float, n_out: int) -> None:
    # IoU(a, b) = 50/150 = 0.333 and IoU(a, c) = 25/175 = 0.143: merged only when strictly
    # above the threshold; with 0.99 nothing merges, with 0.0 all three do.
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [5, 5, 15, 15]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    b, _, _ = weighted_nms(boxes, scores, np.zeros((3, 0, 2), np.float32), threshold)
    assert len(b) == n_out


def test_weighted_nms_max_detections_and_empty() -> None:
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], np.float32)
    scores = np.array([0.5, 0.7, 0.6], np.float32)
    b, s, k = weighted_nms(boxes, scores, np.zeros((3, 4, 2), np.float32), 0.3, 2)
    assert s.tolist() == pytest.approx([0.7, 0.6]) and k.shape == (2, 4, 2)
    b, s, k = weighted_nms(boxes[:0], scores[:0], np.zeros((0, 4, 2), np.float32), 0.3)
    assert b.shape == (0, 4) and s.shape == (0,) and k.shape == (0, 4, 2)


# --- regions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("end", "rotation"), [
    ((100, 0), 0.0),                  # scale point straight above the hip: upright
    ((200, 100), math.pi / 2),        # to the right: lying, head right
    ((0, 100), -math.pi / 2),         # to the left
    ((100, 200), -math.pi),           # below: upside down (normalised to [-pi, pi))
    ((200, 0), math.pi / 4),
])
def test_regions_from_keypoints(end: tuple[float, float], rotation: float) -> None:
    kps = np.array([[[100, 100], end]], np.float32)
    r = regions_from_keypoints(kps, 1.25)
    dist = math.dist((100, 100), end)
    np.testing.assert_allclose(r[0], [100, 100, 2.5 * dist, 2.5 * dist, rotation], atol=1e-5)


# --- decode on synthetic raw outputs -------------------------------------------------------------


def test_decode_places_one_box_from_raw_offsets() -> None:
    anchors = ssd_anchors()
    raw = np.zeros((1, 2254, 12), np.float32)
    logits = np.full((1, 2254, 1), -10.0, np.float32)
    i = 1568 + 392  # first stride-32 anchor, centre (16, 16) input px
    raw[0, i] = [4, -2, 20, 10, 0, 30, 0, -10, 1, 1, 2, 2]  # box, hip 30 px below, top 10 above
    logits[0, i] = 3.0
    lb = Letterbox.fit(448, 448, 224)  # frame px = 2 x input px
    d = decode(raw, logits, anchors, lb)
    assert len(d) == 1
    assert d.scores[0] == pytest.approx(1 / (1 + math.exp(-3)))
    np.testing.assert_allclose(d.boxes[0], 2 * np.array([20 - 10, 14 - 5, 20 + 10, 14 + 5]),
                               atol=1e-3)
    np.testing.assert_allclose(d.keypoints[0, :2], 2 * np.array([[16, 46], [16, 6]]), atol=1e-3)
    np.testing.assert_allclose(d.regions[0], [32, 92, 200, 200, 0], atol=1e-3)


def test_decode_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="2254"):
        decode(np.zeros((1, 10, 12), np.float32), np.zeros((1, 10, 1), np.float32),
               ssd_anchors(), Letterbox.fit(10, 10, 224))


# --- the real detector -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector(manifest: Manifest, detector_key: str) -> PoseDetector:
    return PoseDetector(load_model(detector_key, 1, manifest))


def _inside_rotated(region: np.ndarray, pt: tuple[float, float]) -> bool:
    cx, cy, w, h, rot = (float(v) for v in region)
    dx, dy = pt[0] - cx, pt[1] - cy
    u = math.cos(rot) * dx + math.sin(rot) * dy      # region axes
    v = -math.sin(rot) * dx + math.cos(rot) * dy
    return abs(u) <= w / 2 and abs(v) <= h / 2


# Person boxes x1, y1, x2, y2 (frame px), drawn by eye on the frames.
PEOPLE_168 = {"woman": (200, 510, 460, 950), "man": (770, 170, 1030, 390)}


def test_detector_finds_both_people(detector: PoseDetector, demo_frames: dict[int, U8]) -> None:
    d = detector(demo_frames[168])
    assert len(d) == 2, d.scores
    assert (d.scores >= 0.5).all()
    found = []
    for region in d.regions:
        # each region encloses the whole of exactly one person
        found += [name for name, (x1, y1, x2, y2) in PEOPLE_168.items()
                  if all(_inside_rotated(region, c) for c in ((x1, y1), (x2, y1), (x1, y2),
                                                               (x2, y2)))]
    assert sorted(found) == ["man", "woman"]
    # the upright woman: her mid-hip keypoint is on her body (the flipping man's is ~100 px off)
    woman = int(np.argmax(d.keypoints[:, 0, 1]))  # the lower of the two
    x1, y1, x2, y2 = PEOPLE_168["woman"]
    hx, hy = d.keypoints[woman, 0]
    assert x1 <= hx <= x2 and y1 <= hy <= y2
    assert abs(d.regions[woman, 4]) < 0.4  # roughly upright


def test_detector_on_frame_with_the_woman(detector: PoseDetector,
                                          demo_frames: dict[int, U8]) -> None:
    d = detector(demo_frames[120])
    assert len(d) >= 1
    best = d[np.array([0])]
    hx, hy = best.keypoints[0, 0]
    assert 700 <= hx <= 960 and 600 <= hy <= 900  # her hips
    # face box above the hips, keypoints and region in frame px
    assert best.boxes[0, 1] < hy
    assert best.regions[0, 2] == best.regions[0, 3] > 300


@pytest.mark.parametrize("kind", ["black", "gray", "noise", "sky"])
def test_detector_finds_nobody_where_nobody_is(detector: PoseDetector, kind: str,
                                               demo_frames: dict[int, U8]) -> None:
    # Uniform images carry no person evidence at all; seeded noise checks that texture alone
    # does not fire; "sky" is real texture from the clip (the building and sky left of the
    # box in frame 120, where nobody stands).
    rng = np.random.default_rng(0)
    image = {
        "black": np.zeros((480, 640, 3), np.uint8),
        "gray": np.full((480, 640, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "sky": np.ascontiguousarray(demo_frames[120][0:420, 0:560]),
    }[kind]
    assert len(detector(image)) == 0


def test_detector_output_is_deterministic_and_does_not_touch_input(
        detector: PoseDetector, demo_frames: dict[int, U8]) -> None:
    frame = demo_frames[168]
    before = frame.copy()
    a, b = detector(frame), detector(frame)
    np.testing.assert_array_equal(frame, before)
    np.testing.assert_array_equal(a.regions, b.regions)


# --- misuse ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "match"), [
    (np.zeros((10, 10), np.uint8), r"shape \(H, W, 3\)"),
    (np.zeros((10, 10, 4), np.uint8), r"shape \(H, W, 3\)"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    ([[0, 0, 0]], "numpy array"),
])
def test_preprocess_rejects_bad_images(image: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        preprocess(image)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_score": 1.5}, "min_score"),
    ({"nms_iou": -0.1}, "nms_iou"),
    ({"max_detections": 0}, "max_detections"),
    ({"roi_scale": 0.0}, "roi_scale"),
    ({"scale_keypoint": 4}, "scale_keypoint"),
    ({"strides": ()}, "strides"),
])
def test_config_rejects_bad_values(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DetectorConfig(**kwargs)  # type: ignore[arg-type]


def test_detector_rejects_a_config_that_does_not_fit_the_model(manifest: Manifest,
                                                               detector_key: str) -> None:
    model = load_model(detector_key, 1, manifest)
    with pytest.raises(ValueError, match="boxes"):
        PoseDetector(model, DetectorConfig(strides=(8, 16, 32)))


def test_sigmoid_is_the_logistic_function_and_saturates_quietly() -> None:
    """One sigmoid for every stage: exact in the middle, 0 / 1 at huge logits, no warning."""
    x = np.array([-1e4, -2.0, 0.0, 2.0, 1e4], np.float32)
    with np.errstate(all="raise"):
        y = sigmoid(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0.0, 1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-2.0)), 1.0],
                               rtol=1e-6)
