"""Cameras mounted on their side or upside down (``source.rotate``, ``source.mirror``; the
fuse worker's ``scene.rotate``), and people lying down: real demo frames, real files, a real
stream read by OpenCV's FFmpeg back-end, the real landmark model, the Pose2Sim demo's real
calibration."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from fusedata import short_single  # noqa: F401 (a fixture)

from bench.fuse_data import Scene
from edge import cli
from edge.config import Config, ConfigError, parse_config
from edge.fuse.calib import CalibrationError, CameraModel, read_calibration
from edge.fuse.config import parse_fuse_config
from edge.pipeline import build_pipeline
from edge.runtime import Manifest
from edge.sources import ImageFolderSource, VideoFileSource, base, open_source, open_url
from edge.track import Tracker, TrackerConfig
from edge.types import U8, Detections, Poses2D
from models.sources import POSE2SIM_CALIB, extract

_CV = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
#: The turn that undoes each ``rotate``: a camera mounted that way delivers this.
_MOUNTED = {90: 270, 180: 180, 270: 90}


def _cv_turn(image: U8, rotate: int, mirror: bool = False) -> U8:
    """The reference: ``cv2.rotate`` then a left-right ``cv2.flip``."""
    out = cv2.rotate(image, _CV[rotate]) if rotate else image
    return np.asarray(cv2.flip(out, 1) if mirror else out, np.uint8)


def _lossless_clip(path: Path, frames: list[U8]) -> Path:
    """``frames`` as an FFV1 AVI (lossless: a frame read back is the frame written)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), 30.0, (w, h))
    assert writer.isOpened(), "OpenCV cannot write FFV1"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def plain() -> list[U8]:
    """The demo clip's first 6 frames, (994, 1768, 3) uint8 BGR, as decoded."""
    src = open_source("demo")
    try:
        return [src.read().image for _ in range(6)]
    finally:
        src.close()


# ---------------------------------------------------------------- the turn itself


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
@pytest.mark.parametrize("mirror", [False, True])
def test_turn_is_opencvs_rotate_then_mirror(plain: list[U8], rotate: int, mirror: bool) -> None:
    """Every step table entry gives the same pixels as ``cv2.rotate`` + ``cv2.flip``."""
    image = plain[0]
    got = base.turn(image, rotate, mirror)  # type: ignore[arg-type]
    assert got.flags.c_contiguous and got.dtype == np.uint8
    assert np.array_equal(got, _cv_turn(image, rotate, mirror))
    assert image.shape == (994, 1768, 3)  # the input is untouched


@pytest.mark.parametrize("rotate", [45, -90, 360, 1])
def test_turn_refuses_other_angles(plain: list[U8], rotate: int) -> None:
    with pytest.raises(ValueError, match=r"0, 90, 180 or 270"):
        base.turn(plain[0], rotate)  # type: ignore[arg-type]


# ---------------------------------------------------------------- sources


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_a_camera_mounted_turned_is_read_upright(tmp_path: Path, plain: list[U8],
                                                 rotate: int) -> None:
    """A video of a camera mounted turned (the demo frames turned the other way, lossless),
    read with ``rotate``: every frame is the upright frame, pixel for pixel, at the upright
    size, on the file's clock."""
    clip = _lossless_clip(tmp_path / "mounted.avi",
                          [_cv_turn(f, _MOUNTED[rotate]) for f in plain])
    src = open_source(str(clip), rotate=rotate)  # type: ignore[arg-type]
    assert isinstance(src, VideoFileSource)
    try:
        for i, want in enumerate(plain):
            frame = src.read()
            assert frame.image.shape == (994, 1768, 3)
            assert np.array_equal(frame.image, want), f"frame {i}"
            assert (frame.frame_id, frame.t_capture_ns) == (i, round(i * 1e9 / 30))
    finally:
        src.close()
    unturned = open_source(str(clip))  # without it: the frame as the camera sends it
    try:
        assert unturned.read().image.shape == _cv_turn(plain[0], _MOUNTED[rotate]).shape
    finally:
        unturned.close()


def test_a_mirrored_turned_video_and_the_demo_clip(tmp_path: Path, plain: list[U8]) -> None:
    """``mirror`` after ``rotate``; ``demo`` takes them too."""
    clip = _lossless_clip(tmp_path / "m.avi", [np.asarray(cv2.flip(f, 1), np.uint8)
                                               for f in plain[:2]])
    src = open_source(str(clip), mirror=True)
    try:
        assert np.array_equal(src.read().image, plain[0])
    finally:
        src.close()
    demo = open_source("demo", rotate=90, mirror=True)
    try:
        assert np.array_equal(demo.read().image, _cv_turn(plain[0], 90, True))
    finally:
        demo.close()


def test_still_images_are_turned_after_their_exif(tmp_path: Path, plain: list[U8]) -> None:
    """A folder of a turned camera's photos is turned like its stream."""
    cv2.imwrite(str(tmp_path / "a.png"), _cv_turn(plain[0], 90))
    src = open_source(str(tmp_path), rotate=270)
    assert isinstance(src, ImageFolderSource)
    frame = src.read()
    assert frame.name == "a.png" and np.array_equal(frame.image, plain[0])


def test_a_live_stream_is_turned_on_its_capture_thread(tmp_path: Path,
                                                       plain: list[U8]) -> None:
    """A stream read by OpenCV's FFmpeg back-end (a local file: the code path of an RTSP/HTTP
    URL) of a camera upside down: the frames delivered are upright, the frame ids the stream's
    (the first connection reads the file from its start)."""
    clip = _lossless_clip(tmp_path / "stream.avi", [_cv_turn(f, 180) for f in plain])
    src = open_url(str(clip), rotate=180, reconnect_initial_s=60.0, reconnect_max_s=60.0)
    try:
        frame = src.read(timeout=10.0)
        assert frame.image.shape == (994, 1768, 3)
        assert np.array_equal(frame.image, plain[frame.frame_id])
    finally:
        src.close()


# ---------------------------------------------------------------- config and command line


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_rotate_is_a_source_key(tmp_path: Path, rotate: int) -> None:
    cfg = parse_config({"source": {"rotate": rotate, "mirror": True}})
    assert (cfg.source.rotate, cfg.source.mirror) == (rotate, True)
    path = tmp_path / "c.toml"
    path.write_text(f"[source]\nuri = 'demo'\nrotate = {rotate}\n[mqtt]\nenabled = false\n")
    assert cli.main(["validate-config", str(path)]) == 0


@pytest.mark.parametrize("value", [45, -90, 360, "90", True, 90.5])
def test_a_bad_rotate_is_named(tmp_path: Path, value: Any,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2 from ``validate-config``, the key and the allowed values named."""
    with pytest.raises(ConfigError) as e:
        parse_config({"source": {"rotate": value}})
    assert [k for k, _ in e.value.errors] == ["source.rotate"]
    assert "0, 90, 180 or 270" in e.value.errors[0][1]
    path = tmp_path / "c.toml"
    text = f"'{value}'" if isinstance(value, str) else str(value).lower()
    path.write_text(f"[source]\nrotate = {text}\n")
    assert cli.main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "source.rotate" in err and "0, 90, 180 or 270" in err


def test_run_takes_rotate_from_the_command_line(tmp_path: Path) -> None:
    """``run --rotate`` overrides the config's (``source.rotate``); ``demo`` has none."""
    path = tmp_path / "c.toml"
    path.write_text("[source]\nrotate = 180\n")
    args = cli.build_parser().parse_args(["run", "--config", str(path), "--rotate", "90"])
    assert cli._run_config(args).source.rotate == 90
    args = cli.build_parser().parse_args(["run", "--config", str(path)])
    assert cli._run_config(args).source.rotate == 180
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["run", "--rotate", "45"])
    assert e.value.code == 2
    # serve, the same
    args = cli.build_parser().parse_args(["serve", "--config", str(path), "--rotate", "270"])
    assert cli._serve_config(args).source.rotate == 270
    args = cli.build_parser().parse_args(["serve", "--config", str(path)])
    assert cli._serve_config(args).source.rotate == 180


# ---------------------------------------------------------------- people lying down


def _moved(p: Poses2D, dx: float, dy: float) -> Poses2D:
    off = np.array([dx, dy], np.float32)
    regions, nxt = p.regions.copy(), p.next_regions.copy()
    regions[:, :2] += off
    nxt[:, :2] += off
    return dataclasses.replace(p, keypoints=p.keypoints + off, regions=regions,
                               next_regions=nxt)


def _rows(a: Poses2D, b: Poses2D) -> Poses2D:
    return Poses2D(*(np.concatenate([getattr(a, f.name), getattr(b, f.name)])
                     for f in dataclasses.fields(Poses2D)))


def _detections(p: Poses2D) -> Detections:
    boxes = np.concatenate([p.keypoints.min(1), p.keypoints.max(1)], axis=1)
    return Detections(boxes.astype(np.float32), np.full(len(p), 0.9, np.float32),
                      np.repeat(p.regions[:, None, :2], 4, axis=1).copy(), p.regions.copy())


def test_someone_lying_at_a_standing_persons_feet_is_not_their_part(
        manifest: Manifest, demo_frames: dict[int, U8]) -> None:
    """A fall with a helper beside: the real landmark model's pose of the demo clip's woman
    (frame 168, standing, 206x405 px) and its pose of her in the frame turned a quarter
    (lying: the model's own output on the turned image, within 1 px of the standing pose
    turned), laid at the standing person's feet. The tracker's "part of a person" rule
    measured height vertically: lying, she was as short as a forearm, and her track was
    merged into the standing one at every tick."""
    config = Config.model_validate({"models": {"dir": str(manifest.folder), "threads": 1}})
    landmarker = build_pipeline(config, timings=False, mode="image").core.landmarker
    image = demo_frames[168]
    h = image.shape[0]
    region = np.array([[328.8, 742.2, 684.1, 684.1, 0.0]], np.float32)  # the detector's
    standing = landmarker(image, region)
    turned_region = np.array([[h - 1 - region[0, 1], region[0, 0], region[0, 3],
                               region[0, 2], np.pi / 2]], np.float32)
    lying = landmarker(np.asarray(cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE), np.uint8),
                       turned_region)
    assert standing.presence[0] > 0.9 and lying.presence[0] > 0.9
    kp = standing.keypoints[0]
    turned_kp = np.stack([h - 1 - kp[:, 1], kp[:, 0]], axis=1)
    assert np.median(np.linalg.norm(lying.keypoints[0] - turned_kp, axis=1)) < 1.0
    size = kp.max(0) - kp.min(0)
    assert size[1] > 1.8 * size[0]  # standing: tall
    # Her lying body centred just above the standing one's feet (inside the frame).
    feet = standing.keypoints[0, 27:33].mean(0)
    lk = lying.keypoints[0]
    centre = (lk.min(0) + lk.max(0)) / 2
    both = _rows(standing, _moved(lying, float(feet[0] - centre[0]),
                                  float(feet[1] - 60.0 - centre[1])))
    assert both.keypoints[1].max(0)[1] < h
    tracker = Tracker(TrackerConfig())
    tracker.add_detections(_detections(standing), 0.0)
    tracker.tracks()
    tracker.update(standing, 0.0)
    for tick in range(1, 6):
        t = tick / 30.0
        tracker.add_detections(_detections(both), t)
        ids = [int(i) for i in tracker.tracks().ids]
        events = tracker.update(both[np.array([0 if i == 1 else 1 for i in ids])], t)
        assert [e.kind for e in events] == [], f"tick {tick}: {events}"
        assert ids == [1, 2]


# ---------------------------------------------------------------- several cameras: edge/fuse


@pytest.fixture(scope="module")
def qca() -> Path:
    """The Pose2Sim demo's Qualisys calibration (pinned wheel member, sha256-checked)."""
    cache = Path(__file__).resolve().parent.parent / "cache"
    return extract(POSE2SIM_CALIB, cache / "dl", cache / "build" / "src" / "pose2sim")


def _turn_points(px: npt.NDArray[np.float64], rotate: int, w: int, h: int
                 ) -> npt.NDArray[np.float64]:
    """Pixel centres of a ``w`` x ``h`` frame where :func:`edge.sources.base.turn` puts them."""
    x, y = px[..., 0], px[..., 1]
    return np.stack({90: (h - 1 - y, x), 180: (w - 1 - x, h - 1 - y),
                     270: (y, w - 1 - x)}[rotate], axis=-1)


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_a_turned_camera_model_sees_the_turned_frame(qca: Path, rotate: int) -> None:
    """Each of the Pose2Sim demo's real cameras (Qualisys intrinsics, distortion, poses):
    a world point projects through the turned model where the turned frame has the point's
    projection, to 1e-6 px, by our projection and by OpenCV's; undistortion agrees too; the
    turned pose is a rotation."""
    calib = read_calibration(qca)
    rng = np.random.default_rng(rotate)
    for cam in calib:
        w, h = cam.size
        # points 2-6 m in front of the camera, inside its view
        xn = rng.uniform(-0.4, 0.4, (300, 2))
        z = rng.uniform(2.0, 6.0, 300)
        world = (np.concatenate([xn * z[:, None], z[:, None]], 1) - cam.t) @ cam.r
        px = cam.project(world)
        want = _turn_points(px, rotate, w, h)
        turned = cam.turned(rotate)
        assert turned.size == ((h, w) if rotate != 180 else (w, h))
        assert np.abs(turned.project(world) - want).max() < 1e-6
        cv_px, _ = cv2.projectPoints(world, cv2.Rodrigues(turned.r)[0], turned.t, turned.k,
                                     turned.dist)
        assert np.abs(cv_px[:, 0] - want).max() < 1e-6
        assert np.abs(turned.undistort(want)
                      - _turn_points(cam.undistort(px), rotate, w, h)).max() < 1e-4
        assert np.linalg.det(turned.r) == pytest.approx(1.0)
        assert np.allclose(turned.center, cam.center)


def test_fuse_config_turns_a_devices_camera(tmp_path: Path, qca: Path) -> None:
    """``scene.rotate``: the device's camera is turned (its size too, so the device's turned
    frames pass the size check); a device not in the scene or another angle is named."""
    shutil.copy(qca, tmp_path / "Calib.qca.txt")
    scene = {"name": "lab", "calibration": str(tmp_path / "Calib.qca.txt"),
             "devices": {"a": "cam01", "b": "cam02"}}
    plain_calib = parse_fuse_config({"scene": scene})[1]
    _, calib = parse_fuse_config({"scene": {**scene, "rotate": {"a": 90}}})
    w, h = plain_calib.cameras["cam01"].size
    assert calib.cameras["cam01"].size == (h, w)
    other, plain_other = calib.cameras["cam02"], plain_calib.cameras["cam02"]
    assert other.size == plain_other.size and np.array_equal(other.k, plain_other.k)
    assert calib.check_sizes({"cam01": (h, w)}) == []
    problems = plain_calib.check_sizes({"cam01": (h, w)})  # the worker not told of the turn
    assert len(problems) == 1 and "scene.rotate" in problems[0]
    with pytest.raises(ConfigError) as e:
        parse_fuse_config({"scene": {**scene, "rotate": {"c": 90}}})
    assert e.value.errors[0][0] == "scene" and "rotate" in e.value.errors[0][1]
    with pytest.raises(ConfigError) as e:
        parse_fuse_config({"scene": {**scene, "rotate": {"a": 45}}})
    assert e.value.errors[0][0] == "scene.rotate.a"


def test_a_skewed_camera_is_not_turned() -> None:
    cam = CameraModel("c", (640, 480), np.array([[500.0, 2.0, 320], [0, 500, 240], [0, 0, 1]]),
                      np.zeros(5), np.eye(3), np.zeros(3))
    with pytest.raises(CalibrationError, match=r"skew"):
        cam.turned(90)
    assert cam.turned(0) is cam


def _turned_annotations(src: Path, dst: Path) -> Path:
    """A device's annotations as the device turned a quarter clockwise would publish them:
    the image's size swapped, every joint where the turned frame has it."""
    lines = []
    for line in src.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        w, h = rec["image"]["width"], rec["image"]["height"]
        rec["image"] = {"width": h, "height": w}
        for p in rec["persons"]:
            for name, xy in p["pose_2d"].items():
                if xy is not None:
                    x, y = xy["x"] * w, xy["y"] * h
                    p["pose_2d"][name] = {"x": (h - 1 - y) / h, "y": x / w}
        lines.append(json.dumps(rec))
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def test_a_turned_device_fuses_as_the_unturned_one(
        short_single: Scene, tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    """The Pose2Sim single-person scene, its cam02's real annotations turned a quarter (as
    its device with ``source.rotate = 90`` publishes them): fused with ``--rotate
    cam02=90``, byte for byte the unturned scene's fusion; without it, cam02 is a size
    mismatch naming the turn, and left out."""
    files = [str(p) for p in short_single.jsonl]
    turned = [files[0], str(_turned_annotations(short_single.jsonl[1], tmp_path / "c2.jsonl")),
              *files[2:]]
    calib = str(short_single.calib)
    plain, rotated, missed = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    assert cli.main(["fuse", "--jsonl", *files, "--calib", calib, "--out", str(plain)]) == 0
    assert cli.main(["fuse", "--jsonl", *turned, "--calib", calib, "--rotate", "cam02=90",
                     "--out", str(rotated)]) == 0
    assert rotated.read_bytes() == plain.read_bytes()
    capsys.readouterr()
    assert cli.main(["fuse", "--jsonl", *turned, "--calib", calib, "--out", str(missed)]) == 0
    assert "device cam02" in capsys.readouterr().err
    views = {v for line in missed.read_text(encoding="utf-8").splitlines()
             for p in json.loads(line)["persons"] for j in p["joints"].values() if j
             for v in j["views"]}
    assert views and "cam02" not in views
    assert cli.main(["fuse", "--jsonl", *turned, "--calib", calib, "--rotate", "cam02=45",
                     "--out", str(missed)]) == 2
    assert "--rotate" in capsys.readouterr().err


def test_run_reads_a_turned_camera_upright(tmp_path: Path, plain: list[U8]) -> None:
    """``edge-pose run`` (every frame, real models) on a camera mounted upside down, with
    ``source.rotate = 180``: the annotations are byte for byte those of the upright clip."""
    upright = _lossless_clip(tmp_path / "upright.avi", plain)
    mounted = _lossless_clip(tmp_path / "mounted.avi", [_cv_turn(f, 180) for f in plain])
    rows = {}
    for name, clip, rotate in (("upright", upright, 0), ("mounted", mounted, 180)):
        out = tmp_path / name
        config = parse_config({"source": {"uri": str(clip), "rotate": rotate},
                               "scheduler": {"mode": "every-frame"},
                               "output": {"dir": str(out), "video": False},
                               "mqtt": {"enabled": False}})
        assert cli.run(config, progress=False) == 0
        rows[name] = (out / "annotations.jsonl").read_text(encoding="utf-8")
    assert rows["mounted"] == rows["upright"]
    assert '"image":{"width":1768,"height":994}' in rows["mounted"]
    assert "\"persons\":[{" in rows["mounted"]  # people found
