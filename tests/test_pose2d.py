"""edge.pose2d: the rotated crop's geometry, the real landmark models on regions the real
detector found in real frames, heatmap refinement, batching, misuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.detect import PoseDetector
from edge.pose2d import (
    PoseLandmarker,
    crop_regions,
    crop_to_frame_affines,
    decode_landmarks,
    refine_from_heatmap,
)
from edge.runtime import Manifest, load_model
from edge.types import F32, U8, Poses2D

# BlazePose indices used below (edge.skeleton has the full enum).
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 11, 12, 23, 24

# --- crop geometry -----------------------------------------------------------------------------


def _apply(a: np.ndarray, pts: np.ndarray) -> np.ndarray:
    out: np.ndarray = pts @ a[:, :2].T + a[:, 2]
    return out


@pytest.mark.parametrize("region", [
    (400.0, 300.0, 256.0, 256.0, 0.0),
    (400.0, 300.0, 512.0, 512.0, 0.0),
    (100.0, 50.0, 300.0, 300.0, math.pi / 2),
    (640.0, 360.0, 200.0, 120.0, -0.7),     # not square: padded to 200 x 200
])
def test_affine_maps_crop_corners_and_centre_onto_the_region(
        region: tuple[float, ...]) -> None:
    r = np.array([region], np.float32)
    a = crop_to_frame_affines(r, 256)[0].astype(np.float64)
    cx, cy, w, h, rot = region
    side = max(w, h)
    np.testing.assert_allclose(_apply(a, np.array([[128.0, 128.0]])), [[cx, cy]], atol=1e-3)
    # crop "up" (towards y = 0) is the region's up: (sin, -cos) * side / 2 from the centre
    top = _apply(a, np.array([[128.0, 0.0]]))[0]
    np.testing.assert_allclose(top, [cx + math.sin(rot) * side / 2, cy - math.cos(rot) * side / 2],
                               atol=1e-3)
    # scale: one crop px is side / 256 frame px
    assert abs(np.linalg.det(a[:, :2])) == pytest.approx((side / 256) ** 2, rel=1e-5)


def test_crop_pixels_come_from_where_the_affine_says(demo_frames: dict[int, U8]) -> None:
    frame = demo_frames[120]
    regions = np.array([[808, 749, 564, 564, 0.2], [300, 400, 256, 256, -1.0]], np.float32)
    crops, affines = crop_regions(frame, regions, 256)
    assert crops.shape == (2, 256, 256, 3) and crops.dtype == np.float32
    assert crops.min() >= 0.0 and crops.max() <= 1.0
    for crop, a in zip(crops, affines, strict=True):
        for u, v in [(128, 128), (30, 200), (220, 40)]:
            x, y = np.round(_apply(a.astype(np.float64), np.array([[u, v]], np.float64))[0])
            expect = frame[int(y), int(x)][::-1] / 255.0  # BGR -> RGB
            np.testing.assert_allclose(crop[v, u], expect, atol=0.1)


def test_point_round_trips_through_the_affine() -> None:
    regions = np.array([[500, 400, 300, 300, 2.5]], np.float32)
    a = crop_to_frame_affines(regions)[0].astype(np.float64)
    inv = np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]
    p = np.array([[431.5, 377.25]])
    np.testing.assert_allclose(_apply(a, _apply(inv, p)), p, atol=1e-6)


@pytest.mark.parametrize(("border", "expect"), [("replicate", 1.0), ("zero", 0.0)])
def test_crop_border_outside_the_frame(border: str, expect: float) -> None:
    white = np.full((100, 100, 3), 255, np.uint8)
    crops, _ = crop_regions(white, np.array([[0, 0, 100, 100, 0]], np.float32), 64,
                            border=border)  # type: ignore[arg-type]
    assert crops[0, 0, 0, 0] == pytest.approx(expect)   # top-left: outside the frame
    assert crops[0, 63, 63, 0] == pytest.approx(1.0)    # bottom-right: inside


# --- heatmap refinement (pure) -----------------------------------------------------------------


def test_refine_moves_to_the_heatmap_peak_and_ignores_weak_heatmaps() -> None:
    lm = np.zeros((1, 2, 5), np.float32)
    lm[0, :, :2] = [[100.0, 100.0], [100.0, 100.0]]   # heatmap cell (25, 25)
    hm = np.full((1, 64, 64, 2), -20.0, np.float32)
    hm[0, 27, 23, 0] = 20.0                           # confident peak at row 27, col 23
    hm[0, 27, 23, 1] = -0.5                           # below 0.5 confidence: leave alone
    out = refine_from_heatmap(lm, hm)
    np.testing.assert_allclose(out[0, 0, :2], [23 * 4, 27 * 4], atol=1e-3)
    np.testing.assert_allclose(out[0, 1, :2], [100, 100])
    np.testing.assert_array_equal(lm[0, :, :2], [[100, 100], [100, 100]])  # input untouched


# --- the real landmark models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def landmarker(manifest: Manifest, landmark_key: str) -> PoseLandmarker:
    return PoseLandmarker(load_model(landmark_key, 1, manifest))


@pytest.fixture(scope="module")
def detections_120(manifest: Manifest, demo_frames: dict[int, U8]) -> F32:
    key = sorted(k for k, e in manifest.models.items() if e.role == "detector")[0]
    d = PoseDetector(load_model(key, 1, manifest))(demo_frames[120])
    assert len(d) >= 1
    return d.regions[:1].copy()


def test_landmarks_on_the_detected_woman(landmarker: PoseLandmarker,
                                         demo_frames: dict[int, U8],
                                         detections_120: F32) -> None:
    p = landmarker(demo_frames[120], detections_120)
    assert isinstance(p, Poses2D) and len(p) == 1
    assert p.presence[0] > 0.5
    kp = p.keypoints[0]
    # all 33 landmarks within the region (rotation ignored: a generous test)
    cx, cy, side = detections_120[0, 0], detections_120[0, 1], detections_120[0, 2]
    assert (np.abs(kp - [cx, cy]) <= side * 0.75).all()
    # the woman, 700-960 px wide and 540-980 px high in this frame (drawn by eye)
    assert (kp[:, 0] > 650).all() and (kp[:, 0] < 1000).all()
    assert (kp[:, 1] > 500).all() and (kp[:, 1] < 1000).all()
    # head above shoulders above hips above ankles
    assert kp[0, 1] < kp[[L_SHOULDER, R_SHOULDER], 1].min()
    assert kp[[L_SHOULDER, R_SHOULDER], 1].max() < kp[[L_HIP, R_HIP], 1].min()
    assert kp[[L_HIP, R_HIP], 1].max() < kp[[27, 28], 1].min()
    # she walks side-on: hips and shoulders nearly overlap in the image
    assert np.linalg.norm(kp[L_HIP] - kp[R_HIP]) < 60
    assert np.linalg.norm(kp[L_SHOULDER] - kp[R_SHOULDER]) < 80
    # visibility: probabilities; the nose and near hip are seen
    assert ((p.visibility >= 0) & (p.visibility <= 1)).all()
    assert p.visibility[0, 0] > 0.5
    # world: metres, origin between the hips, y down (hip width: see the frontal test)
    w = p.world[0]
    assert np.linalg.norm(w[L_HIP] - w[R_HIP]) <= 0.45
    assert np.linalg.norm((w[L_HIP] + w[R_HIP]) / 2) < 0.05
    assert w[0, 1] < -0.4   # nose 40+ cm above the hips
    # depth in px, same scale as x, origin at the hips (MediaPipe's z: its span can exceed
    # the body's height in the image; the values match mediapipe 0.10.21 within ~20 px)
    assert np.isfinite(p.depth).all()
    assert abs(p.depth[0, [L_HIP, R_HIP]].mean()) < 0.05 * side
    # the next region is near this one: same person, similar size, similar rotation
    nr, r = p.next_regions[0], detections_120[0]
    assert np.linalg.norm(nr[:2] - r[:2]) < 0.25 * r[2]
    assert 0.6 < nr[2] / r[2] < 1.5 and nr[2] == nr[3]
    assert abs(math.remainder(float(nr[4] - r[4]), 2 * math.pi)) < 0.5
    np.testing.assert_array_equal(p.regions, detections_120)


def test_frontal_man_tracked_by_next_regions(landmarker: PoseLandmarker,
                                             demo_frames: dict[int, U8]) -> None:
    # Frame 0: the man stands on the box facing the camera, backlit; the detector misses him
    # (best score 0.49), so start from a region drawn by eye around him, as a tracker would
    # hold it, and feed next_regions back three times.
    frame = demo_frames[0]
    region = np.array([[655, 300, 560, 560, 0]], np.float32)
    centres = []
    for _ in range(3):
        p = landmarker(frame, region)
        assert p.presence[0] > 0.5
        region = p.next_regions.copy()
        centres.append(region[0, :2])
    kp, w = p.keypoints[0], p.world[0]
    # facing the camera: his left shoulder and hip are on the image's right
    assert kp[L_SHOULDER, 0] > kp[R_SHOULDER, 0] and kp[L_HIP, 0] > kp[R_HIP, 0]
    # his body (by eye): x 600-720, head top y ~ 80, feet y ~ 450
    assert (kp[:, 0] > 560).all() and (kp[:, 0] < 760).all()
    assert (kp[:, 1] > 60).all() and (kp[:, 1] < 480).all()
    assert 0.15 <= np.linalg.norm(w[L_HIP] - w[R_HIP]) <= 0.45
    assert 0.20 <= np.linalg.norm(w[L_SHOULDER] - w[R_SHOULDER]) <= 0.55
    # the region settles: centred near his hips, a stable size, upright
    assert np.linalg.norm(centres[2] - centres[1]) < 15
    assert np.linalg.norm(centres[2] - (kp[L_HIP] + kp[R_HIP]) / 2) < 30
    assert 400 < region[0, 2] < 650 and abs(region[0, 4]) < 0.2


def test_landmarks_follow_a_rotated_region(landmarker: PoseLandmarker,
                                           demo_frames: dict[int, U8],
                                           detections_120: F32) -> None:
    # Rotating the frame by 90 degrees and the region with it must give the same pose,
    # rotated: checks rotation sign conventions of crop, projection and world landmarks.
    frame = demo_frames[120]
    h = frame.shape[0]
    rotated = np.ascontiguousarray(np.rot90(frame, k=-1))  # clockwise: (x, y) -> (h-1-y, x)
    r = detections_120[0]
    r_rot = np.array([[h - 1 - r[1], r[0], r[2], r[3], r[4] + math.pi / 2]], np.float32)
    a, b = landmarker(frame, detections_120), landmarker(rotated, r_rot)
    expect = np.stack([h - 1 - a.keypoints[0, :, 1], a.keypoints[0, :, 0]], axis=1)
    assert np.median(np.linalg.norm(b.keypoints[0] - expect, axis=1)) < 6.0
    # world landmarks are in image axes (MediaPipe rotates them by the region's rotation), so
    # they turn with the image: (x, y) -> (-y, x); z stays
    expect_w = np.stack([-a.world[0, :, 1], a.world[0, :, 0], a.world[0, :, 2]], axis=1)
    assert np.median(np.linalg.norm(b.world[0] - expect_w, axis=1)) < 0.05
    assert abs(math.remainder(float(b.next_regions[0, 4] - a.next_regions[0, 4] - math.pi / 2),
                              2 * math.pi)) < 0.1


def test_two_people_and_batching_agree(manifest: Manifest, landmark_key: str,
                                       demo_frames: dict[int, U8]) -> None:
    frame = demo_frames[168]
    regions = np.array([[350, 735, 733, 733, 0.0], [808, 749, 564, 564, 0.2]], np.float32)
    model = load_model(landmark_key, 1, manifest)
    looped = PoseLandmarker(model, batch=False)(frame, regions)
    batched = PoseLandmarker(model, batch=True)(frame, regions)
    one = PoseLandmarker(model)(frame, regions[1:])
    assert len(looped) == 2
    np.testing.assert_allclose(batched.keypoints, looped.keypoints, atol=1e-2)
    np.testing.assert_allclose(one.keypoints[0], looped.keypoints[1], atol=1e-2)
    sub = looped[np.array([1])]
    np.testing.assert_array_equal(sub.next_regions, looped.next_regions[1:])


def test_no_regions_gives_empty_poses(landmarker: PoseLandmarker,
                                      demo_frames: dict[int, U8]) -> None:
    p = landmarker(demo_frames[120], np.zeros((0, 5), np.float32))
    assert len(p) == 0 and p.next_regions.shape == (0, 5)


def test_empty_region_has_low_presence(landmarker: PoseLandmarker,
                                       demo_frames: dict[int, U8]) -> None:
    # the sky and buildings top-left of frame 120: nobody there
    p = landmarker(demo_frames[120], np.array([[250, 200, 380, 380, 0]], np.float32))
    assert p.presence[0] < 0.5


# --- decode_landmarks on raw arrays --------------------------------------------------------------


def test_decode_landmarks_projects_crop_pixels() -> None:
    regions = np.array([[500, 400, 512, 512, math.pi / 2]], np.float32)
    lm = np.zeros((1, 39, 5), np.float32)
    lm[0, :, :2] = [128, 128]          # all at the crop centre ...
    lm[0, 0, :2] = [128, 0]            # ... but the nose at the crop's top edge
    lm[0, 34, :2] = [128, 64]          # aux: size/rotation point a quarter crop up
    lm[0, :, 2] = 10.0                 # z: 10 crop px
    lm[0, :, 3] = 0.0                  # visibility logit 0 -> 0.5
    world = np.zeros((1, 39, 3), np.float32)
    world[0, 0] = [0, -0.5, 0.1]       # nose 0.5 m up in the crop's frame
    out = {"landmarks": lm.reshape(1, 195), "presence": np.array([[0.9]], np.float32),
           "world": world.reshape(1, 117)}
    p = decode_landmarks(out, crop_to_frame_affines(regions), regions)
    # crop up is frame right for rotation +pi/2; 128 crop px = 256 frame px
    np.testing.assert_allclose(p.keypoints[0, 0], [756, 400], atol=1e-3)
    np.testing.assert_allclose(p.keypoints[0, 1], [500, 400], atol=1e-3)
    np.testing.assert_allclose(p.depth[0], 20.0, atol=1e-4)
    np.testing.assert_allclose(p.visibility[0], 0.5)
    np.testing.assert_allclose(p.world[0, 0], [0.5, 0.0, 0.1], atol=1e-6)
    # next region: centre at aux 33 (crop centre), side 2 * 1.25 * 128 px, same rotation
    np.testing.assert_allclose(p.next_regions[0], [500, 400, 320, 320, math.pi / 2], atol=1e-3)


# --- misuse ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "regions", "match"), [
    (np.zeros((10, 10), np.uint8), np.zeros((1, 5), np.float32), r"\(H, W, 3\)"),
    (np.zeros((10, 10, 3), np.float64), np.zeros((1, 5), np.float32), "uint8"),
    (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 4), np.float32), r"\(n, 5\)"),
    (np.zeros((10, 10, 3), np.uint8), np.zeros(5, np.float32), r"\(n, 5\)"),
    (np.zeros((10, 10, 3), np.uint8), np.ones((1, 5), np.float64), "float32"),
    (np.zeros((10, 10, 3), np.uint8), np.full((1, 5), np.nan, np.float32), "finite"),
    (np.zeros((10, 10, 3), np.uint8), np.array([[5, 5, 0, 0, 0]], np.float32), "positive"),
    (np.zeros((10, 10, 3), np.uint8), [[5, 5, 4, 4, 0]], "numpy array"),
])
def test_landmarker_rejects_bad_input(landmarker: PoseLandmarker, image: object,
                                      regions: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        landmarker(image, regions)  # type: ignore[arg-type]


def test_decode_rejects_mismatched_outputs() -> None:
    regions = np.zeros((2, 5), np.float32)
    out = {"landmarks": np.zeros((1, 195), np.float32), "presence": np.zeros((1, 1), np.float32),
           "world": np.zeros((1, 117), np.float32)}
    with pytest.raises(ValueError, match="landmarks"):
        decode_landmarks(out, crop_to_frame_affines(regions), regions)
    with pytest.raises(ValueError, match="world"):
        decode_landmarks({"landmarks": out["landmarks"], "presence": out["presence"]},
                         crop_to_frame_affines(regions[:1]), regions[:1])


def test_landmarker_rejects_a_detector_model(manifest: Manifest) -> None:
    key = sorted(k for k, e in manifest.models.items() if e.role == "detector")[0]
    with pytest.raises(ValueError, match="landmark"):
        PoseLandmarker(load_model(key, 1, manifest))


# --- parallel landmark interpreters ------------------------------------------------------------


def test_parallel_interpreters_give_the_serial_poses_exactly(manifest: Manifest,
                                                             demo_frames: dict[int, U8]) -> None:
    """Three regions (the woman, the man mid-backflip, the doorway onlooker) dealt among two
    single-thread interpreters on two threads give, in the regions' order, the very poses of
    one interpreter running them one by one (same file; XNNPACK's results do not depend on the
    thread count); one region runs on the main interpreter."""
    key = "landmark_full_int8"
    frame = demo_frames[168]
    regions = np.array([[350, 735, 733, 733, 0.0], [808, 749, 564, 564, 0.2],
                        [1490, 610, 200, 200, 0.0]], np.float32)
    serial = PoseLandmarker(load_model(key, 2, manifest))
    par = PoseLandmarker(load_model(key, 2, manifest),
                         parallel=[load_model(key, 1, manifest) for _ in range(2)])
    try:
        for rows in (regions, regions[::-1].copy(), regions[1:2]):
            a, b = serial(frame, rows), par(frame, rows)
            for field in ("keypoints", "depth", "visibility", "presence", "world", "regions",
                          "next_regions"):
                np.testing.assert_array_equal(getattr(b, field), getattr(a, field), field)
        assert par(frame, regions).presence[0] > 0.5  # the woman: a real pose compared
    finally:
        par.close()
    par.close()  # twice is fine


def test_parallel_landmarker_misuse(manifest: Manifest) -> None:
    full = load_model("landmark_full_int8", 1, manifest)
    lite = load_model("landmark_lite_int8", 1, manifest)
    with pytest.raises(ValueError, match="two or more"):
        PoseLandmarker(full, parallel=[full])
    with pytest.raises(ValueError, match="not with batch"):
        PoseLandmarker(full, batch=True, parallel=[full, full])
    with pytest.raises(ValueError, match="must be landmark_full_int8"):
        PoseLandmarker(full, parallel=[full, lite])
