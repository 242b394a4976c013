"""The whole pipeline on real video: tracking, 2D, 3D, annotations valid against the schema,
reproducible reruns, people-free video, truncated video, and misuse of the core."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest

from edge import annotation, cli
from edge.config import Config
from edge.pipeline import build_pipeline
from edge.runtime import Manifest
from edge.sources import DEMO_CLIP, VideoFileSource
from edge.types import Frame

N_FRAMES = 230


def _precision(manifest: Manifest) -> str:
    """The shipped default (int8) when the manifest has it."""
    has_int8 = any(e.role == "landmark" and e.precision == "int8"
                   for e in manifest.models.values())
    return "int8" if has_int8 else "float"


def _config(manifest: Manifest, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {"models": {"precision": _precision(manifest), "landmark": "full",
                                       "dir": str(manifest.folder)},
                            "scheduler": {"mode": "every-frame"}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return Config.model_validate(data)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def demo_run(manifest: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`edge-pose run` over the whole demo clip, every frame; returns the output folder."""
    out = tmp_path_factory.mktemp("demo")
    config = _config(manifest, source={"uri": str(DEMO_CLIP)}, output={"dir": str(out)})
    assert cli.run(config, progress=False) == 0
    return out


def test_outputs_are_written(demo_run: Path) -> None:
    rows = _read_jsonl(demo_run / "annotations.jsonl")
    assert [r["frame_id"] for r in rows] == list(range(N_FRAMES))
    cap = cv2.VideoCapture(str(demo_run / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N_FRAMES
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (
        1768, 994)
    cap.release()
    stats = json.loads((demo_run / "stats.json").read_text())
    assert stats["frames_processed"] == N_FRAMES and stats["error"] is None
    every = Config().scheduler.detector_every
    assert stats["stages"]["detect"]["runs"] == len(range(0, N_FRAMES, every))
    assert stats["stages"]["pose2d"]["runs"] == N_FRAMES


def test_every_annotation_is_valid_against_the_schema(demo_run: Path) -> None:
    validator = jsonschema.Draft202012Validator(annotation.schema())
    for row in _read_jsonl(demo_run / "annotations.jsonl"):
        errors = list(validator.iter_errors(row))
        assert not errors, (row["frame_id"], errors[0].message)
        assert "timings_ms" not in row  # every-frame mode: reproducible output


def test_both_people_tracked_with_stable_ids(demo_run: Path) -> None:
    """The man on the box is in view throughout (his pose is lost only mid-backflip, about
    frames 176-186); the woman walks in from the right at about frame 43 and out on the left at
    about frame 203 (checked by eye on the annotated video). The onlooker in the doorway is
    left out (see :func:`doorway`)."""
    rows = _read_jsonl(demo_run / "annotations.jsonl")
    persons = {r["frame_id"]: [p for p in r["persons"] if not doorway(p)] for r in rows}
    both = [f for f in range(70, 166) if len(persons[f]) == 2]
    assert len(both) >= 0.95 * len(range(70, 166)), "both people found in nearly every frame"
    assert sum(len(persons[f]) >= 1 for f in range(10, 166)) >= 0.95 * len(range(10, 166))
    # No ID switches while both are in view: no frame with two boxes of one ID, no ID jumping
    # across the frame between consecutive frames (but mid-backflip, frames 166-194, where the
    # man's spinning body moves its box by more than that), each keeps one ID from 70 to 165.
    assert all(len(persons[f]) <= 2 for f in persons)
    for f in [*range(1, 166), *range(195, 225)]:  # 225-229: he leaves the frame
        prev = {p["id"]: p["bbox"] for p in persons[f - 1]}
        for p in persons[f]:
            if p["id"] in prev:
                a, b = prev[p["id"]], p["bbox"]
                ca = np.array([a["x1"] + a["x2"], a["y1"] + a["y2"]]) / 2
                cb = np.array([b["x1"] + b["x2"], b["y1"] + b["y2"]]) / 2
                assert np.linalg.norm(ca - cb) < 0.1, f"id {p['id']} jumps at frame {f}"
    # The woman (walks below, in front of the box) and the man (on the box, upper left).
    woman = persons[120][0]["id"] if persons[120][0]["bbox"]["y1"] > 0.4 else persons[120][1]["id"]
    man = ({p["id"] for p in persons[120]} - {woman}).pop()
    ids = {p["id"] for f in range(70, 166) for p in persons[f]}
    assert ids == {man, woman}, f"ids {sorted(ids)} in frames 70-165"
    for f in range(70, 166):
        for p in persons[f]:
            centre_y = (p["bbox"]["y1"] + p["bbox"]["y2"]) / 2
            assert (p["id"] == man) == (centre_y < 0.45), f"frame {f}: id {p['id']} on the other"


def test_two_ids_over_the_whole_clip_through_the_backflip(demo_run: Path) -> None:
    """The man keeps his ID through and after his backflip (lost mid-air about frames 176-186,
    found again as he lands lower right; measured: his ID in frames 0-175, 187-191 and
    193-228), the woman keeps hers: two IDs over the whole clip, no switch."""
    rows = _read_jsonl(demo_run / "annotations.jsonl")
    persons = {r["frame_id"]: [p for p in r["persons"] if not doorway(p)] for r in rows}
    ids = {p["id"] for ps in persons.values() for p in ps}
    assert len(ids) <= 2, f"ids {sorted(ids)}"
    man = next(p["id"] for p in persons[150]
               if (p["bbox"]["y1"] + p["bbox"]["y2"]) / 2 < 0.45)
    after = [p["id"] for f in range(212, 225) for p in persons[f]]  # the woman has left
    assert after and set(after) == {man}, f"after the backflip: {sorted(set(after))}"


def doorway(person: dict[str, Any]) -> bool:
    """The demo clip's people in the background: an onlooker in the shop doorway behind the
    tree, right of the frame (about x 0.83-0.85, y 0.60-0.64; 30-40 px of a torso, checked by eye
    on frame 100), and passers-by behind the hedge (x 0.68-0.76, y 0.58-0.66, 40-60 px, heads
    and shirts above the bushes in frames 120-180, checked by eye; a realtime replay found one
    at frame 162). The hand labels of the issue count only the man and the woman; finding the
    others is right, so the presence scores leave them out rather than count them as false
    persons. Both places lie far from the man and the woman, who are over 0.3 of the frame
    tall."""
    b = person["bbox"]
    cx, cy = (b["x1"] + b["x2"]) / 2, (b["y1"] + b["y2"]) / 2
    small = b["y2"] - b["y1"] < 0.08
    shop = 0.80 <= cx <= 0.88 and 0.57 <= cy <= 0.67
    hedge = 0.66 <= cx <= 0.78 and 0.55 <= cy <= 0.68
    return bool(small and (shop or hedge))


# Hand-labelled presence on the demo clip (issue "See everyone the camera sees"): the man is in
# view in frames 0-224, the woman in frames 38-198 (386 person-frames); frames 34-37, 199-208
# and 225-229 are ambiguous (entering or leaving, mostly hidden): no false-person check there.
PRESENT = {f: int(f <= 224) + int(38 <= f <= 198) for f in range(N_FRAMES)}
AMBIGUOUS = set(range(34, 38)) | set(range(199, 209)) | set(range(225, 230))


def presence_recall(rows: list[dict[str, Any]]) -> tuple[float, list[int]]:
    """Share of the labelled person-frames found, and the unambiguous frames with extra people.

    Args:
        rows: Annotations of the demo clip, one per frame processed (any subset of frames).

    Returns:
        ``(recall, frames_with_more_people_than_present)`` over the frames in ``rows``.
    """
    found = {r["frame_id"]: sum(not doorway(p) for p in r["persons"]) for r in rows}
    present = sum(PRESENT[f] for f in found)
    hit = sum(min(n, PRESENT[f]) for f, n in found.items())
    extra = [f for f, n in found.items() if f not in AMBIGUOUS and n > PRESENT[f]]
    return hit / present, extra


def test_demo_clip_presence_recall(demo_run: Path) -> None:
    """Every-frame mode finds >= 95 % of the 386 labelled person-frames (measured: 372, 0.964;
    the man is lost for about 11 frames mid-backflip; frames 184-185 counted until a track
    whose region grew over 2 frame heights was ended: it was a false "man" at the wrong
    place), and nobody where nobody is: no frame with a person more than labelled (the
    woman's track ends once her landmarks' box is centred left of the frame; before, her last
    arm on the left edge made 3 such frames just after the ambiguous frames 199-208)."""
    rows = _read_jsonl(demo_run / "annotations.jsonl")
    assert len(rows) == N_FRAMES and sum(PRESENT.values()) == 386
    recall, extra = presence_recall(rows)
    assert recall >= 0.95, f"presence recall {recall:.3f}"
    assert extra == [], f"more people than present in frames {extra}"


def test_keypoints_lie_on_the_person(demo_run: Path) -> None:
    """Visible joints lie in the frame (5 % margin: the model extrapolates limbs just outside)
    and inside their person's box (grown by 5 %), and the
    box is a plausible person's size."""
    for row in _read_jsonl(demo_run / "annotations.jsonl"):
        for p in row["persons"]:
            b = p["bbox"]
            w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
            if doorway(p):  # the onlooker's torso: 10-40 px in a 1768x994 frame
                continue
            assert 0.02 < h < 0.9 and 0.01 < w < 0.6, (row["frame_id"], b)
            for name, xy in p["pose_2d"].items():
                if xy is None or p["confidence"][name] < 0.5:
                    continue
                assert -0.05 <= xy["x"] <= 1.05 and -0.05 <= xy["y"] <= 1.05
                assert b["x1"] - 0.05 * w <= xy["x"] <= b["x2"] + 0.05 * w
                assert b["y1"] - 0.05 * h <= xy["y"] <= b["y2"] + 0.05 * h


BONES_M = {  # adult bone lengths, metres (generous bounds)
    ("left_hip", "left_knee"): (0.25, 0.6), ("right_hip", "right_knee"): (0.25, 0.6),
    ("left_knee", "left_ankle"): (0.25, 0.6), ("right_knee", "right_ankle"): (0.25, 0.6),
    ("left_shoulder", "left_elbow"): (0.18, 0.45), ("right_shoulder", "right_elbow"): (0.18, 0.45),
    ("left_shoulder", "right_shoulder"): (0.2, 0.5), ("left_hip", "right_hip"): (0.1, 0.4),
}


def test_pose_3d_is_metric_root_relative_with_plausible_bones(demo_run: Path) -> None:
    lengths: dict[tuple[str, str], list[float]] = {b: [] for b in BONES_M}
    roots = []
    for row in _read_jsonl(demo_run / "annotations.jsonl"):
        for p in row["persons"]:
            j = p["pose_3d"]
            assert j, "pose_3d present"
            if j.get("left_hip") and j.get("right_hip"):
                lh, rh = j["left_hip"], j["right_hip"]
                roots.append([(lh[k] + rh[k]) / 2 for k in "xyz"])
            for a, b in BONES_M:
                if j.get(a) and j.get(b):
                    lengths[(a, b)].append(float(np.linalg.norm(
                        [j[a][k] - j[b][k] for k in "xyz"])))
    assert np.abs(np.median(roots, axis=0)).max() < 0.02, "origin midway between the hips"
    for bone, (lo, hi) in BONES_M.items():
        med = float(np.median(lengths[bone]))
        assert lo <= med <= hi, f"{bone}: median {med:.3f} m"


def test_rerun_gives_identical_annotations(demo_run: Path, manifest: Manifest,
                                           tmp_path: Path) -> None:
    config = _config(manifest, source={"uri": str(DEMO_CLIP)},
                     output={"dir": str(tmp_path), "video": False})
    assert cli.run(config, progress=False) == 0
    assert (tmp_path / "annotations.jsonl").read_bytes() == (
        demo_run / "annotations.jsonl").read_bytes()


def test_side_by_side_landmarks_and_read_ahead_detector_change_nothing(
        demo_run: Path, manifest: Manifest) -> None:
    """The demo run (the detector on the reading thread, ahead of the core; one landmark
    interpreter of 2 threads) and a run with the detector in line and a frame's people side by
    side on two single-thread interpreters (``models.landmark_parallel``; the rescue's
    variants too) give the same annotations, text for text. Frames 0-47: the rescue of frame
    33, the woman found at frame 42 and tracked with the man from 43."""
    config = _config(manifest, models={"threads": 2, "landmark_parallel": True},
                     source={"uri": str(DEMO_CLIP)})
    pipeline = build_pipeline(config, timings=False, mode="every-frame")
    assert len(pipeline.core.landmarker.parallel) == 2
    rows = (demo_run / "annotations.jsonl").read_text().splitlines()
    src = VideoFileSource(DEMO_CLIP)
    try:
        for i in range(48):
            frame = src.read()
            detected = pipeline.detect(frame) if i % config.scheduler.detector_every == 0 else None
            assert pipeline.core.step(frame, detected).annotation.to_json() == rows[i], i
    finally:
        src.close()
        pipeline.core.landmarker.close()
    assert any(len(json.loads(r)["persons"]) == 2 for r in rows[:48])


def _write_clip(path: Path, frames: list[np.ndarray[Any, Any]], fps: float = 30.0) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()


def test_clip_with_nobody(manifest: Manifest, demo_frames: dict[int, Any],
                          tmp_path: Path) -> None:
    """A real clip of the scene's building and sky (no person in it): no persons, no error."""
    empty = np.ascontiguousarray(demo_frames[120][0:420, 0:560])
    clip = tmp_path / "nobody.mp4"
    _write_clip(clip, [np.roll(empty, 3 * i, axis=1) for i in range(20)])
    config = _config(manifest, source={"uri": str(clip)}, output={"dir": str(tmp_path / "o")},
                     scheduler={"detector_every": 1})
    assert cli.run(config, progress=False) == 0
    rows = _read_jsonl(tmp_path / "o" / "annotations.jsonl")
    assert len(rows) == 20 and all(r["persons"] == [] for r in rows)


def test_truncated_video_keeps_what_was_written(manifest: Manifest, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "truncated.mp4"
    clip.write_bytes(DEMO_CLIP.read_bytes()[:1_000_000])
    out = tmp_path / "o"
    config = _config(manifest, source={"uri": str(clip)},
                     output={"dir": str(out), "video": True})
    assert cli.run(config, progress=False) == 1
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "kept" in err
    rows = _read_jsonl(out / "annotations.jsonl")
    assert 10 < len(rows) < N_FRAMES
    assert [r["frame_id"] for r in rows] == list(range(len(rows)))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["frames_processed"] == len(rows) and "truncated" in stats["error"]
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(rows)  # finalised, playable


def test_a_file_that_is_not_a_video(manifest: Manifest, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video")
    assert cli.main(["run", "--source", str(bogus), "--out", str(tmp_path / "o"),
                     "--precision", _precision(manifest), "--no-progress"]) == 2
    assert "cannot be opened" in capsys.readouterr().err


def test_out_of_order_timestamps_are_rejected(manifest: Manifest,
                                              demo_frames: dict[int, Any]) -> None:
    pipeline = build_pipeline(_config(manifest))
    image = demo_frames[120]
    pipeline.core.step(Frame(image, 0, 2_000_000_000, 0.0), None)
    with pytest.raises(ValueError, match=r"not after the previous frame"):
        pipeline.core.step(Frame(image, 1, 1_000_000_000, 0.033), None)
    with pytest.raises(ValueError, match=r"not after the previous frame"):
        pipeline.core.step(Frame(image, 1, 2_000_000_000, 0.033), None)
    pipeline.core.reset()
    pipeline.core.step(Frame(image, 0, 1_000_000_000, 0.0), None)  # fine after a reset


@pytest.mark.parametrize(("image", "match"), [
    (np.zeros((10, 10), np.uint8), r"shape \(n, n, 3\)"),
    (np.zeros((10, 10, 3), np.float32), r"must be uint8"),
    (np.zeros((10, 10, 4), np.uint8), r"shape \(n, n, 3\)"),
])
def test_frames_of_the_wrong_shape_or_type_are_refused(image: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Frame(image, 0, 1, 0.0)


def test_regions_of_the_wrong_shape_are_refused(manifest: Manifest,
                                                demo_frames: dict[int, Any]) -> None:
    pipeline = build_pipeline(_config(manifest))
    with pytest.raises(ValueError, match=r"regions"):
        pipeline.core.landmarker(demo_frames[120], np.zeros((2, 4), np.float32))


def test_realtime_mode_drops_frames_it_cannot_keep_up_with(manifest: Manifest,
                                                           tmp_path: Path) -> None:
    """Realtime on the demo clip played at its own 30 fps: the newest frame is processed each
    tick, every frame is either processed or counted as dropped, annotations carry timings.
    The first tick waits for the detector's first result (the warm start): the man, in view
    from frame 0, is in the first annotation (before, the first 3-6 frames came out empty)."""
    config = _config(manifest, source={"uri": str(DEMO_CLIP)},
                     output={"dir": str(tmp_path), "video": False},
                     scheduler={"mode": "realtime", "rate_hz": 15.0, "detector_hz": 5.0})
    assert cli.run(config, progress=False) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    rows = _read_jsonl(tmp_path / "annotations.jsonl")
    assert stats["frames_read"] == N_FRAMES
    assert stats["frames_processed"] == len(rows) > 20
    assert stats["frames_processed"] + stats["frames_dropped"] == N_FRAMES
    assert stats["frames_dropped"] > 0  # a 15 Hz tick cannot take every frame of a 30 fps clip
    ids = [r["frame_id"] for r in rows]
    assert ids == sorted(set(ids))
    assert rows[0]["persons"], f"frame {rows[0]['frame_id']}: nobody on the first tick"
    validator = jsonschema.Draft202012Validator(annotation.schema())
    for row in rows:
        validator.validate(row)
        assert set(row["timings_ms"]) == {"detect", "pose2d", "pose3d", "track", "total"}
    assert stats["stages"]["detect"]["runs"] >= 10
    assert sum(len(r["persons"]) for r in rows) > len(rows)  # people found
