"""Still images (image mode) on real photos: people found in each image independently, folders
of mixed sizes with broken files, EXIF orientation, annotated images, COCO keypoints read by
pycocotools, and bad input (empty folder, 1x1, huge, not an image)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from testdata import photo

from edge import annotation, cli
from edge.config import Config
from edge.detect.box import box_regions
from edge.detect.tiles import TiledDetector
from edge.pipeline import build_pipeline, paint_out
from edge.runtime import Manifest
from edge.skeleton import BLAZEPOSE_FLIP
from edge.sources.files import ImageFolderSource, read_image
from edge.track import box_fit
from edge.types import Detections, DetectorResult, Frame


def _config(manifest: Manifest, source: Path, out: Path, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {"models": {"dir": str(manifest.folder)},
                            "source": {"uri": str(source)}, "output": {"dir": str(out)}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return Config.model_validate(data)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]


def _run(manifest: Manifest, source: Path, out: Path) -> tuple[int, list[dict[str, Any]]]:
    code = cli.run(_config(manifest, source, out), progress=False)
    return code, _rows(out) if (out / "annotations.jsonl").is_file() else []


@pytest.mark.parametrize(("name", "people"), [("zidane.jpg", 2), ("messi5.jpg", 1)])
def test_photo_people_found_in_image_mode(manifest: Manifest, tmp_path: Path, name: str,
                                          people: int) -> None:
    """A single photo: the people in it, at once (no confirmation tick), in the right place.

    messi5.jpg: the player, and maybe spectators in the blurred stands behind him (people
    40-60 px tall), none of them as tall as a quarter of the photo.
    """
    code, rows = _run(manifest, photo(name), tmp_path / "o")
    assert code == 0 and len(rows) == 1
    row = rows[0]
    jsonschema.validate(row, annotation.schema())
    tall = [p for p in row["persons"] if p["bbox"]["y2"] - p["bbox"]["y1"] > 0.25]
    assert row["file"] == name and len(tall) == people
    if name == "zidane.jpg":
        assert len(row["persons"]) == people
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["mode"] == "image"
    for p in row["persons"]:  # joints on the person: inside the frame, a plausible size
        b = p["bbox"]
        assert -0.05 <= b["x1"] < b["x2"] <= 1.05 and -0.05 <= b["y1"] < b["y2"]
        assert (b["x2"] - b["x1"]) * (b["y2"] - b["y1"]) > (0.01 if p in tall else 0.001)


def test_group_photo_has_more_people_than_a_stream_tracks(manifest: Manifest, tmp_path: Path
                                                          ) -> None:
    """A still takes up to ``tracking.max_persons_image`` (32) people, not a stream's 6.

    bus.jpg three times side by side: the two people standing in front of the bus in each
    copy (a man in a light coat, a woman in black, x 0.03-0.15 of the whole), and the people
    cut by the photo's sides, whole where two copies meet: 8 or more in all (a stream's limit
    of 6 found 6). With ``max_persons_image = 5``: five of those.
    """
    bus = cv2.imread(str(photo("bus.jpg")))
    assert bus is not None
    path = tmp_path / "group.jpg"
    cv2.imwrite(str(path), np.hstack([bus, bus, bus]))
    assert Config().tracking.max_persons == 6
    _, rows = _run(manifest, path, tmp_path / "all")
    persons = rows[0]["persons"]
    assert len(persons) >= 8
    centres = np.array([((p["bbox"]["x1"] + p["bbox"]["x2"]) / 2,
                         (p["bbox"]["y1"] + p["bbox"]["y2"]) / 2) for p in persons])
    tall = np.array([p["bbox"]["y2"] - p["bbox"]["y1"] > 0.3 for p in persons])
    for k in range(3):
        assert (tall & (np.abs(centres[:, 0] - k / 3 - 0.09) < 0.07)).sum() == 2
    out = tmp_path / "five"
    cli.run(_config(manifest, path, out, tracking={"max_persons_image": 5}), progress=False)
    five = _rows(out)[0]["persons"]
    assert len(five) == 5
    for p in five:
        c = ((p["bbox"]["x1"] + p["bbox"]["x2"]) / 2, (p["bbox"]["y1"] + p["bbox"]["y2"]) / 2)
        assert np.hypot(*(centres - c).T).min() < 0.02


def test_zidane_people_are_where_they_are(manifest: Manifest, tmp_path: Path) -> None:
    """zidane.jpg: one man's face at about x 0.58-0.68 of the width, the other's at 0.37-0.45."""
    _, rows = _run(manifest, photo("zidane.jpg"), tmp_path / "o")
    noses = sorted(p["pose_2d"]["nose"]["x"] for p in rows[0]["persons"])
    assert 0.35 < noses[0] < 0.5 and 0.7 < noses[1] < 0.85


def test_folder_of_mixed_sizes_with_broken_files(manifest: Manifest, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Every good image is processed whatever its size; broken ones are named and skipped;
    annotated images and coco_keypoints.json (read by pycocotools) are written."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("zidane.jpg", "messi5.jpg", "bus.jpg"):
        shutil.copy(photo(name), folder / name)
    big = cv2.imread(str(photo("zidane.jpg")))
    assert big is not None
    small = cv2.resize(big, (640, 360))
    cv2.imwrite(str(folder / "zidane_small.png"), small)
    (folder / "broken.jpg").write_bytes(photo("messi5.jpg").read_bytes()[:300])
    (folder / "notes.png").write_text("not an image at all\n")
    (folder / "readme.txt").write_text("ignored: not an image suffix\n")
    out = tmp_path / "o"
    code, rows = _run(manifest, folder, out)
    assert code == 0
    report = capsys.readouterr().out
    assert "broken.jpg" in report and "notes.png" in report
    assert [r["file"] for r in rows] == ["bus.jpg", "messi5.jpg", "zidane.jpg",
                                         "zidane_small.png"]
    sizes = {r["file"]: (r["image"]["width"], r["image"]["height"]) for r in rows}
    assert sizes["bus.jpg"] == (810, 1080) and sizes["zidane_small.png"] == (640, 360)
    counts = {r["file"]: len(r["persons"]) for r in rows}
    assert counts["zidane.jpg"] == counts["zidane_small.png"] == 2 and counts["messi5.jpg"] >= 1
    assert counts["bus.jpg"] >= 3
    for r in rows:  # each image on its own: IDs restart at 1
        ids = [p["id"] for p in r["persons"]]
        assert min(ids) == 1 and len(set(ids)) == len(ids)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["frames_processed"] == 4 and stats["frames_dropped"] == 2
    assert {s["file"] for s in stats["skipped"]} == {"broken.jpg", "notes.png"}
    for r in rows:  # annotated images, same size as the input
        img = cv2.imread(str(out / "annotated" / r["file"]))
        assert img is not None and img.shape[1::-1] == sizes[r["file"]]
    # A photo's drawing has its people only: no video header ("frame 0  det ... fps") over
    # its top left corner (bus.jpg's is sky and a building: nobody there).
    drawn = cv2.imread(str(out / "annotated" / "bus.jpg"))
    plain = cv2.imread(str(folder / "bus.jpg"))
    assert drawn is not None and plain is not None
    corner = np.abs(drawn[:40, :260].astype(np.int16) - plain[:40, :260].astype(np.int16))
    assert corner.mean() < 4, f"the top left corner is drawn on ({corner.mean():.1f} / 255)"

    coco_path = out / "coco_keypoints.json"
    data = json.loads(coco_path.read_text())
    assert [i["file_name"] for i in data["images"]] == [r["file"] for r in rows]
    assert len(data["annotations"]) == sum(counts.values())
    for a in data["annotations"]:
        assert a["category_id"] == 1 and len(a["keypoints"]) == 51 and len(a["bbox"]) == 4
        kp = np.array(a["keypoints"], np.float64).reshape(17, 3)
        img = data["images"][a["image_id"] - 1]
        vis = kp[:, 2] > 0
        assert vis.sum() >= 5
        assert (kp[vis, 0] > -0.1 * img["width"]).all() and (kp[vis, 0] < 1.1 * img["width"]).all()
    gt = COCO(str(coco_path))  # pycocotools reads the file as a dataset ...
    dt = gt.loadRes(data["annotations"])  # ... and its annotations as results
    ev = COCOeval(gt, dt, "keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] > 0.99  # results scored against themselves: AP 1


def test_exif_orientation_is_honoured(manifest: Manifest, tmp_path: Path) -> None:
    """A portrait photo stored sideways with EXIF orientation 6 is read upright."""
    upright = cv2.imread(str(photo("messi5.jpg")))
    assert upright is not None
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what a sideways sensor stores
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "sideways.jpg"
    Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).save(path, exif=exif, quality=95)
    _, rows = _run(manifest, path, tmp_path / "o")
    assert (rows[0]["image"]["width"], rows[0]["image"]["height"]) == (548, 342)
    player = [p for p in rows[0]["persons"] if p["bbox"]["y2"] - p["bbox"]["y1"] > 0.25]
    assert len(player) == 1  # (and maybe spectators in the stands, as upright)
    pose = player[0]["pose_2d"]
    assert pose["nose"]["y"] < pose["left_ankle"]["y"]  # head up: the image was turned back


def test_one_pixel_image_has_nobody(manifest: Manifest, tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    cv2.imwrite(str(path), np.full((1, 1, 3), 128, np.uint8))
    code, rows = _run(manifest, path, tmp_path / "o")
    assert code == 0 and rows[0]["persons"] == [] and rows[0]["image"] == {"width": 1,
                                                                           "height": 1}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 20000x20000 image (a tiny 1-bit PNG on disk) is refused by its header, with a message
    naming the file and the limit, not decoded into 1.2 GB."""
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)
    r = _cli("run", "--source", str(path), "--out", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 1
    assert "huge.png" in r.stderr and "MP" in r.stderr and "Traceback" not in r.stderr
    # In a folder it is one skipped file among good ones.
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.move(str(path), folder / "huge.png")
    shutil.copy(photo("messi5.jpg"), folder / "messi5.jpg")
    src = ImageFolderSource(folder)
    assert src.read().name == "messi5.jpg"
    assert [f for f, _ in src.skipped] == ["huge.png"]


@pytest.mark.parametrize("content", [b"", b"plain text, not a JPEG\n", b"\xff\xd8\xff\xe0" * 8])
def test_non_image_with_an_image_suffix(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    r = _cli("run", "--source", str(path), "--out", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 1 and "photo.jpg" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("mode", ["--realtime", "--every-frame"])
def test_one_photo_in_a_video_mode_is_refused(tmp_path: Path, mode: str) -> None:
    """A person is published once seen in a second frame in the video modes: one photo (or
    the example config's ``mode = "realtime"``) ran, found nobody and exited 0."""
    r = _cli("run", "--source", str(photo("zidane.jpg")), mode, "--out", str(tmp_path / "o"),
             "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "zidane.jpg: one still in scheduler.mode" in r.stderr and "--image" in r.stderr


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = _cli("run", "--source", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no images" in r.stderr and "Traceback" not in r.stderr


def test_folder_with_only_broken_images_fails(manifest: Manifest, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"nope")
    code, rows = _run(manifest, folder, tmp_path / "o")
    assert code == 1 and rows == []


def test_still_poses_are_confirmed_against_their_box(manifest: Manifest, tmp_path: Path) -> None:
    """Image mode refines every new pose once and keeps it only where it fits its body box
    (``PoseCore._confirm``): a box around the man on the right of zidane.jpg is kept, with
    landmarks spanning his box, and published as refined (the landmarks of the region his first
    landmarks give); person-shaped boxes on the empty wall are dropped."""
    path = photo("zidane.jpg")
    pipe = build_pipeline(_config(manifest, path, tmp_path), timings=False, mode="image")
    assert pipe.core.still
    image = read_image(path)
    boxes = np.array([[756, 44, 1147, 713],      # the man on the right (box detector's box)
                      [30, 20, 150, 300], [560, 10, 680, 230]], np.float32)  # wall
    dets = Detections(boxes, np.full(3, 0.9, np.float32), np.zeros((3, 0, 2), np.float32),
                      box_regions(boxes, 1.5))
    frame = Frame(image, 0, 1_000_000_000, 1.0, name="zidane.jpg")
    pipe.core.reset()
    persons = pipe.core.step(frame, DetectorResult(dets, 0, 1.0, 0.0)).annotation.payload[
        "persons"]
    assert len(persons) == 1, persons
    h, w = image.shape[:2]
    kp = np.array([[p["x"] * w, p["y"] * h] for p in persons[0]["pose_2d"].values()
                   if p is not None], np.float32)
    fit = box_fit(boxes[:1], kp[None], (w, h))[0]
    assert fit >= pipe.config.tracking.min_box_fit, fit
    # The published pose is the refined one: the landmarks of the region the first pass gave.
    first = pipe.core.landmarker(image, dets.regions[:1])
    second = pipe.core.landmarker(image, first.next_regions)
    nose = persons[0]["pose_2d"]["nose"]
    got = np.array([nose["x"] * w, nose["y"] * h])
    assert np.linalg.norm(got - second.keypoints[0, 0]) < 1.0
    assert np.linalg.norm(first.keypoints[0, 0] - second.keypoints[0, 0]) > 1.0


def test_still_poses_must_also_be_seen_in_the_mirror(manifest: Manifest, tmp_path: Path
                                                     ) -> None:
    """Image mode keeps a pose only when the mean of its presence and the presence the landmark
    model gives the mirror image of its region reaches min_presence (``PoseCore._mirrored``):
    the man on the right of zidane.jpg is found there again, in the same pose mirrored;
    regions of messi5.jpg's crowded stands where the model imagines a body (presence >=
    min_presence) show nobody in the mirror."""
    path = photo("zidane.jpg")
    pipe = build_pipeline(_config(manifest, path, tmp_path), timings=False, mode="image")
    core, lm = pipe.core, pipe.core.landmarker
    image = read_image(path)
    w = image.shape[1]
    first = lm(image, box_regions(np.array([[756, 44, 1147, 713]], np.float32), 1.5))
    man = lm(image, first.next_regions)
    frame = Frame(image, 0, 1, 0.0, name="zidane.jpg")
    assert core._mirrored(frame, man, np.array([0], np.intp)).tolist() == [True]
    # The mirror's regions are where the frame's are: its landmarks, flipped back and with
    # left and right exchanged, are the frame's: the seen ones within 3 % of the man's height
    # (the landmark model is not exactly mirror-symmetric; a region mirrored wrongly, e.g. not
    # turned the other way, is off by tens of percent).
    # A region turned by half a radian, so that a turn not mirrored shows (47 px off, not 11).
    turned = lm(image, man.regions + np.array([0, 0, 0, 0, 0.5], np.float32))
    mirror = np.ascontiguousarray(image[:, ::-1])
    seen = lm(mirror, core.mirror_regions(turned.regions, w))
    back = seen.keypoints[0, BLAZEPOSE_FLIP].copy()
    back[:, 0] = (w - 1) - back[:, 0]
    tall = float(np.ptp(turned.keypoints[0, :, 1]))
    seen_joints = turned.visibility[0] >= 0.5
    assert seen_joints.sum() >= 10
    err = np.linalg.norm(back - turned.keypoints[0], axis=1)[seen_joints]
    assert float(np.median(err)) < 0.03 * tall, (np.median(err), tall)

    stands = photo("messi5.jpg")
    crowd = read_image(stands)
    regions = np.array([[200, 40, 80, 80, 0], [440, 80, 80, 80, 0], [80, 120, 80, 80, 0]],
                       np.float32)
    clutter = lm(crowd, regions)
    assert (clutter.presence >= pipe.config.tracking.min_presence).all(), clutter.presence
    frame = Frame(crowd, 0, 1, 0.0, name="messi5.jpg")
    assert core._mirrored(frame, clutter, np.arange(3)).tolist() == [False] * 3


def test_still_pose_caught_on_a_neighbour_is_its_twin(manifest: Manifest, tmp_path: Path
                                                      ) -> None:
    """Image mode: a box beside the man on the right of zidane.jpg (its region holds him) gives
    his pose again, fitting that box worse than his own box; ``PoseCore._twins`` names it the
    twin (so ``_confirm`` gives it a tight try), not the man's own pose, and a pose that was
    not confirmed is never a twin."""
    path = photo("zidane.jpg")
    pipe = build_pipeline(_config(manifest, path, tmp_path), timings=False, mode="image")
    lm = pipe.core.landmarker
    image = read_image(path)
    h, w = image.shape[:2]
    boxes = np.array([[756, 44, 1147, 713], [640, 200, 940, 713]], np.float32)
    poses = lm(image, lm(image, box_regions(boxes, 1.5)).next_regions)
    # Both regions land on the man: noses less than 15 px apart.
    assert np.linalg.norm(poses.keypoints[0, 0] - poses.keypoints[1, 0]) < 15.0
    rows = np.arange(2)
    assert pipe.core._twins(poses, rows, np.array([True, True]), boxes, (w, h)).tolist() == [
        False, True]
    assert pipe.core._twins(poses, rows, np.array([True, False]), boxes, (w, h)).tolist() == [
        False, False]


def test_a_person_painted_out_is_not_found_again(manifest: Manifest, tmp_path: Path) -> None:
    """``paint_out`` (``PoseCore._behind``'s frame) covers a person with the colour around them:
    on zidane.jpg with the man on the right painted out, a tight region on his box finds
    nobody there (he was found there before, and the man on the left outside it), while the
    pixels away from him are the photo's own and the photo is not modified."""
    path = photo("zidane.jpg")
    pipe = build_pipeline(_config(manifest, path, tmp_path), timings=False, mode="image")
    lm, min_presence = pipe.core.landmarker, pipe.config.tracking.min_presence
    image = read_image(path)
    before = image.copy()
    box = np.array([[756, 44, 1147, 713]], np.float32)
    man = lm(image, lm(image, box_regions(box, 1.5)).next_regions)
    assert man.presence[0] >= min_presence
    painted = paint_out(image, man.keypoints)
    assert np.array_equal(image, before)
    tight = box_regions(box, pipe.core.TIGHT)
    assert lm(image, tight).presence[0] >= min_presence
    again = lm(painted, tight)
    assert again.presence[0] < min_presence, again.presence
    changed = np.any(painted != image, axis=2)
    assert changed[400, 950] and not changed[400, 300] and not changed[50, 50]
    assert len(np.unique(painted[changed], axis=0)) == 1  # one colour


def test_a_large_photo_is_detected_on_a_shrunk_copy(manifest: Manifest, tmp_path: Path) -> None:
    """A 4000x2250 photo (zidane.jpg enlarged) is detected on a copy shrunk to
    ``detector.still_max_side`` (2560): as many detector calls as for a 2560x1440 image (not the
    ~300 of its own grids), the same detections scaled back to its px, and ``edge-pose run``
    on the file gives the photo's two people, in its px."""
    path = photo("zidane.jpg")
    image = read_image(path)
    big = np.asarray(cv2.resize(image, (4000, 2250), interpolation=cv2.INTER_CUBIC), np.uint8)
    hd = np.asarray(cv2.resize(big, (2560, 1440), interpolation=cv2.INTER_AREA), np.uint8)
    pipe = build_pipeline(_config(manifest, path, tmp_path), timings=False, mode="image")
    det = pipe.detector
    assert isinstance(det, TiledDetector) and det.config.still_max_side == 2560
    inner, calls = det.detector, []

    def counted(im: npt.NDArray[np.uint8]) -> Detections:
        calls.append(im.shape)
        return inner(im)

    det.detector = counted
    found = det(big)
    n_big = len(calls)
    calls.clear()
    want = det(hd)
    assert n_big == len(calls) < 200, (n_big, len(calls))
    assert len(found) == len(want) >= 2
    np.testing.assert_allclose(found.boxes, want.boxes * np.float32(4000 / 2560), rtol=1e-4)
    never = build_pipeline(_config(manifest, path, tmp_path, detector={"still_max_side": 8192}),
                           timings=False, mode="image").detector
    assert isinstance(never, TiledDetector) and never.config.still_max_side == 8192

    cv2.imwrite(str(tmp_path / "big.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
    code, rows = _run(manifest, tmp_path / "big.jpg", tmp_path / "out")
    assert code == 0 and rows[0]["image"] == {"width": 4000, "height": 2250}
    code, small = _run(manifest, path, tmp_path / "small")
    assert code == 0
    assert len(rows[0]["persons"]) == len(small[0]["persons"]) == 2
    # the surest person (the man on the right; the bent man's pose changes with any resampling
    # of the photo) where he is on the photo itself
    got, was = (max(r[0]["persons"], key=lambda p: p["score"])["bbox"] for r in (rows, small))
    assert all(abs(got[k] - was[k]) < 0.03 for k in ("x1", "y1", "x2", "y2")), (got, was)
