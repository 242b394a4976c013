"""The crowd benchmark: its generator on real clips and models, and its scorer.

The generator runs for real on a tiny scale (people cut out of the first 30 frames of the
Sports2D demo with the original landmark model, pasted on opencv-doc photos): it needs the pinned
npm package ``@mediapipe/pose`` (``npm pack``) and Debian's ``opencv-doc`` (``apt-get download``),
fetched once into ``cache/`` and sha256-checked.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from bench.crowd import score, sources
from bench.crowd import stills as bench_stills
from bench.crowd.compose import Placement, compose, fit_background, pasted_extent, scaled
from bench.crowd.cutouts import Bank
from bench.crowd.generate import GT_VERSION, Settings, generate, load_or_build_bank, person_json
from bench.crowd.generate import main as generate_main
from bench.crowd.score import Person, match_box, match_frame
from bench.crowd.score import main as score_main
from edge import cli
from edge.config import Config
from edge.detect.box import BoxDetectorConfig, box_regions
from edge.detect.tiles import TileConfig, tile_grid
from edge.pipeline import FINE_TILES, build_pipeline
from edge.runtime import Manifest
from edge.sinks.images import coco_person
from edge.skeleton import Coco17
from edge.types import Detections, DetectorResult, Frame

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "cache"
TINY = Settings(seed=7, frames=6, people=(3, 6), clips=1, clip_frames=30, walkers=(3, 4),
                pose2sim=False, source_frames=30)


def _cache_copy(tmp: Path) -> Path:
    """A cache folder of its own (so the cutouts are cut again) sharing the downloads."""
    (CACHE / "dl").mkdir(parents=True, exist_ok=True)
    (CACHE / "build").mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "dl").symlink_to(CACHE / "dl")
    (tmp / "build").symlink_to(CACHE / "build")
    return tmp


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tiny benchmark: 6 still frames, one 30-frame clip."""
    root = tmp_path_factory.mktemp("crowd")
    gt = generate(root / "out", TINY, _cache_copy(root / "cache"))
    return root / "out", gt


@pytest.fixture(scope="module")
def bank(tiny: tuple[Path, dict[str, Any]]) -> Bank:
    out, _ = tiny
    return load_or_build_bank(out.parent / "cache", TINY)


def test_generator_is_deterministic(tiny: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out1, gt1 = tiny
    gt2 = generate(tmp_path / "out", TINY, _cache_copy(tmp_path / "cache"))
    assert gt1 == gt2
    assert (out1 / "gt.json").read_bytes() == (tmp_path / "out" / "gt.json").read_bytes()
    for f in gt1["frames"]:
        assert (out1 / f["file"]).read_bytes() == (tmp_path / "out" / f["file"]).read_bytes()
    other = generate(tmp_path / "seed8", Settings(**{**TINY.__dict__, "seed": 8}),
                     tmp_path / "cache")
    assert other["frames"] != gt1["frames"]


def test_generated_ground_truth_is_consistent(tiny: tuple[Path, dict[str, Any]]) -> None:
    out, gt = tiny
    assert len(gt["frames"]) == 6 and len(gt["clips"]) == 1
    assert gt["joints"][0] == "nose" and len(gt["joints"]) == 17
    sizes = {(f["width"], f["height"]) for f in gt["frames"]}
    assert sizes == {(768, 576), (1280, 720)}
    for f in gt["frames"]:
        assert (out / f["file"]).is_file()
        assert 3 <= len(f["persons"]) <= 6
        for p in f["persons"]:
            kp = np.asarray(p["keypoints"]).reshape(17, 3)
            assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
            inside = ((kp[:, 0] >= 0) & (kp[:, 0] <= f["width"] - 1) & (kp[:, 1] >= 0)
                      & (kp[:, 1] <= f["height"] - 1))
            assert ((kp[:, 2] == 0) == ~inside).all()
            assert 38 <= p["height"] <= 402
    coco = json.loads((out / "gt_coco.json").read_text())
    people = [p for f in gt["frames"] for p in f["persons"]]
    assert [a["iscrowd"] for a in coco["annotations"]] == [int(p["ignore"]) for p in people]
    assert {im["file_name"] for im in coco["images"]} == {f["file"] for f in gt["frames"]}
    for a in coco["annotations"]:
        assert 0 <= a["area"] <= a["bbox"][2] * a["bbox"][3]
        assert a["num_keypoints"] == sum(v > 0 for v in a["keypoints"][2::3])
    assert len(coco["categories"][0]["skeleton"]) == 19
    clip = gt["clips"][0]
    assert (out / clip["file"]).stat().st_size > 10_000
    assert len(clip["frames"]) == 30
    # A walker keeps its identity and its source track, its pose advances through consecutive
    # source frames, and it moves smoothly: its hips move by a few % of its height per frame
    # (median; the source pose itself jumps now and then).
    ids = {p["id"] for fr in clip["frames"] for p in fr["persons"]}
    assert len(ids) >= 3
    for ident in ids:
        seq = [(fr["index"], p) for fr in clip["frames"] for p in fr["persons"]
               if p["id"] == ident]
        assert len({p["source"]["track"] for _, p in seq}) == 1
        steps = [abs(q["source"]["frame"] - p["source"]["frame"])
                 for (f0, p), (f1, q) in itertools.pairwise(seq) if f1 == f0 + 1]
        assert np.median(steps) == 1
        moves = [np.hypot(*(np.asarray(q["keypoints"]).reshape(17, 3)[[11, 12], :2].mean(0)
                            - np.asarray(p["keypoints"]).reshape(17, 3)[[11, 12], :2].mean(0)))
                 / p["height"] for (f0, p), (f1, q) in itertools.pairwise(seq) if f1 == f0 + 1]
        assert np.median(moves) < 0.05


def test_keypoints_land_on_the_pasted_person(bank: Bank) -> None:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (576, 768, 3), dtype=np.uint8)
    for flip in (False, True):
        cuts = [bank.cutouts[i] for i in (0, len(bank.cutouts) // 2, len(bank.cutouts) - 1)]
        places = [Placement(c, h / c.mask_height, 40 + 250 * k, 100, flip, identity=k + 1)
                  for k, (c, h) in enumerate(zip(cuts, (120, 200, 300), strict=True))]
        frame, people = compose(background, places)
        assert frame.shape == background.shape
        for p in people:
            bgra, _, _ = scaled(p.placement)
            mask = bgra[:, :, 3] >= 128
            seen = p.keypoints[:, 2] == 2
            assert seen.sum() >= 10
            xy = np.round(p.keypoints[seen, :2] - [p.placement.x, p.placement.y]).astype(int)
            # Each seen joint is on the person's mask or within 3 % of the height of it (a wrist
            # or an ankle on the silhouette's edge).
            r = max(2, round(0.03 * p.height))
            near = [mask[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].any() for x, y in xy]
            assert all(near), (flip, p.identity, xy)
            assert abs(p.height - round(p.placement.scale * p.placement.cutout.mask_height)) <= 2
            # Mirroring keeps the people the right way round: a left joint stays on the same
            # side of its right twin as in the source (left/right indices swapped with x).
            src = p.placement.cutout.keypoints
            side_src = np.sign(src[Coco17.LEFT_HIP, 0] - src[Coco17.RIGHT_HIP, 0])
            side = np.sign(p.keypoints[Coco17.LEFT_HIP, 0] - p.keypoints[Coco17.RIGHT_HIP, 0])
            assert side == side_src


def test_occlusion_marks_covered_joints(bank: Bank) -> None:
    c = bank.cutouts[0]
    background = np.full((576, 768, 3), 90, np.uint8)
    s = 300 / c.mask_height
    back = Placement(c, s, 200, 100, identity=1)
    front = Placement(c, s, 200, 100, identity=2)  # exactly on top: covers all of it
    _, (p_back, p_front) = compose(background, [back, front])
    assert p_back.visible_fraction == 0.0 and p_back.ignore
    assert (p_back.keypoints[:, 2] <= 1).all()
    assert p_front.visible_fraction == 1.0 and not p_front.ignore
    cols = np.flatnonzero((scaled(front)[0][:, :, 3] >= 128).any(axis=0))
    assert p_front.bbox[0] == 200 + cols[0]
    assert p_front.bbox[2] == cols[-1] - cols[0] + 1
    # Outside the frame on the left: joints there get v = 0.
    (p_out,) = compose(background, [Placement(c, s, -60, 100, identity=3)])[1]
    assert (p_out.keypoints[p_out.keypoints[:, 0] < 0, 2] == 0).all()
    assert (p_out.keypoints[:, 0] < 0).any()


# --- scorer ----------------------------------------------------------------------------------


def _write_preds(tmp: Path, coco: dict[str, Any], clip_lines: list[dict[str, Any]]) -> Path:
    (tmp / "coco.json").write_text(json.dumps(coco))
    (tmp / "clips" / "clip00").mkdir(parents=True, exist_ok=True)
    (tmp / "clips" / "clip00" / "annotations.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in clip_lines))
    return tmp


def _run_score(out: Path, preds: Path) -> dict[str, Any]:
    assert score_main(["--gt", str(out / "gt.json"), "--pred", str(preds / "coco.json"),
                       "--clips-dir", str(preds / "clips"), "--json",
                       str(preds / "score.json"), "--markdown", str(preds / "score.md")]) == 0
    result: dict[str, Any] = json.loads((preds / "score.json").read_text())
    assert "| recall |" in (preds / "score.md").read_text()
    return result


def test_perfect_predictions_score_perfectly(tiny: tuple[Path, dict[str, Any]],
                                             tmp_path: Path) -> None:
    out, gt = tiny
    preds = _write_preds(tmp_path, score.gt_as_coco_results(gt),
                         score.gt_as_annotations(gt["clips"][0]))
    r = _run_score(out, preds)
    st = r["stills"]
    for bucket in ("40-80", "80-160", "160-400", ">=80", "all"):
        assert st["recall"][bucket]["recall"] in (1.0, None)
    assert st["recall"]["all"]["total"] == sum(not p["ignore"] for f in gt["frames"]
                                               for p in f["persons"])
    assert st["precision"]["precision"] == 1.0
    assert st["keypoint_error"][">=80"]["median_pct"] == 0.0
    assert st["keypoint_error"][">=80"]["joints"] > 50
    mot = r["clips"]["clip00"]["mot"]
    assert mot["idf1"] == 1.0 and mot["num_switches"] == 0 and mot["mota"] == 1.0


def test_known_perturbations_give_known_figures(tiny: tuple[Path, dict[str, Any]],
                                                tmp_path: Path) -> None:
    out, gt = tiny
    coco = score.gt_as_coco_results(gt)
    heights = {(f["id"], i): p["height"] for f in gt["frames"]
               for i, p in enumerate(f["persons"])}
    # Every keypoint moved right by 3 % of its person's height; every other person and the
    # ignored ones dropped; one extra prediction per frame on a spot nobody is near.
    kept, anns = [], []
    by_image: dict[int, int] = {}
    for a in coco["annotations"]:
        k = by_image.get(a["image_id"], 0)
        by_image[a["image_id"]] = k + 1
        kp = np.asarray(a["keypoints"]).reshape(17, 3)
        kp[:, 0] += 0.03 * heights[(a["image_id"], k)]
        p = gt["frames"][a["image_id"]]["persons"][k]
        if k % 2 == 0 and not p["ignore"]:
            anns.append({**a, "keypoints": kp.reshape(-1).tolist()})
            kept.append(p)
    free = 0
    for f in gt["frames"]:
        x, y = 2.0, 2.0
        if all(not (p["bbox"][0] < 40 and p["bbox"][1] < 40)
               and np.asarray(p["keypoints"]).reshape(17, 3)[:, :2].min(0).min() > 40
               for p in f["persons"]):
            free += 1
            fp = [v for j in range(17) for v in (x + 30 * (j % 2), y + 2 * j, 2)]
            anns.append({"image_id": f["id"], "category_id": 1, "score": 0.5,
                         "keypoints": fp, "bbox": [x, y, 30, 34]})
    coco["annotations"] = anns
    preds = _write_preds(tmp_path, coco, score.gt_as_annotations(gt["clips"][0]))
    r = _run_score(out, preds)["stills"]
    scored = [p for f in gt["frames"] for p in f["persons"] if not p["ignore"]]
    found = kept
    for bucket, lo, hi in (("40-80", 40, 80), (">=80", 80, 10_000), ("all", 0, 10_000)):
        total = sum(lo <= p["height"] < hi for p in scored)
        hits = sum(lo <= p["height"] < hi for p in found)
        assert r["recall"][bucket]["total"] == total
        assert r["recall"][bucket]["found"] == hits
    assert r["precision"]["false_positives"] == free
    assert r["precision"]["true_positives"] == len(found)
    assert r["keypoint_error"][">=80"]["median_pct"] == pytest.approx(3.0, abs=0.01)
    assert r["keypoint_error"]["40-80"]["median_pct"] == pytest.approx(3.0, abs=0.01)


def test_swapped_ids_count_as_switches(tiny: tuple[Path, dict[str, Any]],
                                       tmp_path: Path) -> None:
    out, gt = tiny
    clip = gt["clips"][0]
    lines = score.gt_as_annotations(clip)

    def scored_ids(fr: dict[str, Any]) -> set[int]:
        return {p["id"] for p in fr["persons"] if not p["ignore"]}

    # Two walkers scored in every frame from some frame k - 1 to the end swap ids at k.
    n = len(clip["frames"])
    k, pair = next((k, sorted(common)[:2]) for k in range(n // 2, n)
                   if len(common := set.intersection(*(scored_ids(clip["frames"][f])
                                                       for f in range(k - 1, n)))) >= 2)
    a, b = pair
    for line in lines[k:]:
        for p in line["persons"]:
            p["id"] = {a: b, b: a}.get(p["id"], p["id"])
    preds = _write_preds(tmp_path, score.gt_as_coco_results(gt), lines)
    mot = _run_score(out, preds)["clips"]["clip00"]["mot"]
    assert mot["num_switches"] == 2
    assert mot["num_misses"] == 0 and mot["num_false_positives"] == 0
    assert mot["mota"] == pytest.approx(1 - 2 / mot["num_objects"], abs=1e-4)
    assert mot["idf1"] < 1.0


# --- matching, table-driven on hand-made people ------------------------------------------------


def _person(x: float, y: float, h: float, ignore: bool = False) -> Person:
    """A stick person: 17 joints spread over a box h tall and h/4 wide at (x, y)."""
    t = np.linspace(0, 1, 17)
    kp = np.column_stack([x + 0.25 * h * (t * 7 % 1), y + h * t, np.full(17, 2.0)])
    return Person(kp, match_box(kp[:, :2], 2000, 2000), h, ignore)


@pytest.mark.parametrize(("gt", "pred", "pairs", "fps", "discarded"), [
    ([_person(100, 100, 100)], [_person(100, 100, 100)], [(0, 0)], [], []),
    ([_person(100, 100, 100)], [_person(104, 100, 100)], [(0, 0)], [], []),   # 4 % off: found
    ([_person(100, 100, 100)], [_person(160, 100, 100)], [], [0], []),        # beside: missed
    ([_person(100, 100, 100)], [_person(100, 100, 100)] * 2, [(0, 0)], [1], []),  # a double
    ([_person(100, 100, 100, ignore=True)], [_person(100, 100, 100)], [], [], [0]),
    ([_person(100, 100, 100), _person(130, 100, 100)],
     [_person(131, 100, 100), _person(99, 100, 100)], [(0, 1), (1, 0)], [], []),
    ([], [_person(5, 5, 50)], [], [0], []),
])
def test_match_frame(gt: list[Person], pred: list[Person], pairs: list[tuple[int, int]],
                     fps: list[int], discarded: list[int]) -> None:
    m = match_frame(gt, pred)
    assert sorted(m.pairs) == pairs
    assert m.false_positives == fps
    assert m.discarded == discarded


def test_match_box_widens_thin_people() -> None:
    box = match_box(np.array([[10.0, 0.0], [12.0, 100.0]]), 640, 480)
    assert box.tolist() == [-14.0, 0.0, 36.0, 100.0]
    lying = match_box(np.array([[0.0, 50.0], [100.0, 52.0]]), 640, 480)
    assert lying.tolist() == [0.0, 26.0, 100.0, 76.0]


# --- command lines: bad input ------------------------------------------------------------------


def test_score_refuses_bad_input(tiny: tuple[Path, dict[str, Any]], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = tiny
    assert score_main(["--gt", str(tmp_path / "missing.json"), "--pred", "x.json"]) == 2
    assert "make it with `python -m bench.crowd.generate`" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{\"not\": 1}")
    assert score_main(["--gt", str(out / "gt.json"), "--pred", str(tmp_path / "bad.json")]) == 2
    assert "not a COCO keypoints results file" in capsys.readouterr().err
    assert score_main(["--gt", str(out / "gt.json"), "--clip", "clip99=x.jsonl"]) == 2
    assert "no such clip" in capsys.readouterr().err
    assert score_main(["--gt", str(out / "gt.json")]) == 2
    assert "nothing to score" in capsys.readouterr().err
    other = {"images": [{"id": 1, "file_name": "elsewhere.jpg", "width": 9, "height": 9}],
             "annotations": []}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert score_main(["--gt", str(out / "gt.json"), "--pred", str(tmp_path / "other.json")]) == 2
    assert "none of its 1 images" in capsys.readouterr().err


def test_generate_refuses_bad_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate_main(["--frames", "-1"]) == 2
    assert "--frames must be >= 0" in capsys.readouterr().err


def test_no_predictions_score_zero_recall_and_valid_json(tiny: tuple[Path, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    out, gt = tiny
    empty = [{**line, "persons": []} for line in score.gt_as_annotations(gt["clips"][0])]
    preds = _write_preds(tmp_path, {"images": score.gt_as_coco_results(gt)["images"],
                                    "annotations": []}, empty)
    r = _run_score(out, preds)  # json.loads refuses nothing, so check the text has no NaN too
    assert "NaN" not in (preds / "score.json").read_text()
    assert r["stills"]["recall"]["all"]["found"] == 0
    assert r["stills"]["precision"]["precision"] is None
    mot = r["clips"]["clip00"]["mot"]
    assert mot["recall"] == 0.0 and mot["precision"] is None and mot["num_false_positives"] == 0


def test_edge_pose_finds_the_people_of_composed_crowd_frames(
        tiny: tuple[Path, dict[str, Any]], manifest: Manifest, tmp_path: Path) -> None:
    """edge-pose in image mode on the tiny benchmark's 6 composed stills (people cut out of real
    video, pasted at 40-400 px with overlaps): most people >= 80 px found, few false persons.
    The full benchmark (300 frames) measures recall 40-80 / >= 80 px 0.80 / 0.90 and precision
    0.95; on so few frames the bars are lower."""
    out, _ = tiny
    config = Config.model_validate({
        "models": {"dir": str(manifest.folder), "threads": 1},
        "source": {"uri": str(out / "frames")}, "output": {"dir": str(tmp_path)}})
    assert cli.run(config, progress=False) == 0
    gt = score.load_gt(out / "gt.json")
    stills = score.score_frames([people for *_, people in gt.frames],
                                score.load_coco_results(tmp_path / "coco_keypoints.json", gt))
    # Measured here: 16 of 17 people >= 80 px, 6 of 7 at 40-80 px, no false person.
    assert stills["recall"][">=80"]["recall"] >= 0.85, stills["recall"]
    assert stills["recall"]["40-80"]["recall"] >= 0.7, stills["recall"]
    assert stills["precision"]["precision"] >= 0.9, stills["precision"]
    # bench.crowd.stills runs the same pipeline in one process: the same figures, and one
    # detector call per view (the whole frame upright and turned a quarter turn each way,
    # the 416-px grid with rows overlapping by half, the fine grid) of each still (upright).
    res = bench_stills.run(out / "gt.json", range(len(gt.frames)), models_dir=manifest.folder)
    assert res["figures"] == stills
    tiles = TileConfig(fine_px=round(FINE_TILES * 416), per_run=0)
    for size, cost in res["cost"].items():
        w, h = (int(v) for v in size.split("x"))
        views = 3 + len(tile_grid(w, h, tiles, tiles.still_row_overlap)) + len(
            tile_grid(w, h, TileConfig(tile_px=tiles.fine_px)))
        assert cost["detector_calls"] == views, (size, cost)
        assert cost["landmark_calls"] >= 2, (size, cost)


def test_close_ups_of_a_group_photo_are_found(tiny: tuple[Path, dict[str, Any]], bank: Bank,
                                              manifest: Manifest, tmp_path: Path) -> None:
    """A group photo of close-ups: 3 people 0.8 of the frame tall behind 4 who are cut at the
    knees by the frame's bottom (1280x720, composed from the tiny bank's real people, each
    row side by side). A close-up's first pose often lands on the neighbour its wide region
    holds; a close-up whose refined pose does not agree with the first gets the tight try
    (a region on its box) as smaller people do. Measured: 5 of the 6 scored found (the 7th is
    mostly hidden), one false person; without the close-ups' tight try 3 of 6, one false."""
    out, _ = tiny
    rng = np.random.default_rng(1)
    photos = sources.backgrounds(out.parent / "cache")
    names = sorted(photos)
    photo = cv2.imread(str(photos[names[1 % len(names)]]))
    assert photo is not None
    w, h = 1280, 720
    bg = fit_background(np.asarray(photo, np.uint8), w, h, rng)
    placements: list[Placement] = []
    for n, tall, feet in ((3, 0.8 * h, 0.72 * h), (4, 0.95 * h, 1.1 * h)):  # back row first
        for j in range(n):
            c = bank.cutouts[int(rng.integers(len(bank.cutouts)))]
            s = tall * rng.uniform(0.95, 1.05) / c.mask_height
            pw, ph = pasted_extent(Placement(c, s, 0, 0))
            cx = (j + 0.5 + rng.uniform(-0.15, 0.15)) * w / n
            placements.append(Placement(c, s, round(cx - pw / 2), round(feet - ph),
                                        bool(rng.random() < 0.5), identity=len(placements) + 1))
    image, people = compose(bg, placements)
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "group.png"), image)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({
        "version": GT_VERSION, "joints": [], "generator": {}, "clips": [],
        "frames": [{"id": 0, "file": "frames/group.png", "width": w, "height": h,
                    "persons": [person_json(p, bank.clip_names) for p in people]}]}))
    config = Config.model_validate({
        "models": {"dir": str(manifest.folder), "threads": 1},
        "source": {"uri": str(tmp_path / "frames")}, "output": {"dir": str(tmp_path / "o")}})
    assert cli.run(config, progress=False) == 0
    gt = score.load_gt(gt_path)
    figures = score.score_frames([gt.frames[0][-1]], score.load_coco_results(
        tmp_path / "o" / "coco_keypoints.json", gt))
    assert sum(not p.ignore for p in gt.frames[0][-1]) == 6  # one is hidden by the others
    assert figures["recall"]["all"]["found"] >= 5, figures["recall"]
    assert figures["precision"]["false_positives"] <= 1, figures["precision"]


@pytest.mark.parametrize(("seed", "shift"), [(25, (0.1, 0.35)), (6, (0.0, 0.1))])
def test_a_person_standing_behind_another_is_found(
        tiny: tuple[Path, dict[str, Any]], bank: Bank, manifest: Manifest, seed: int,
        shift: tuple[float, float]) -> None:
    """Two of the tiny bank's real people, one behind the other (1280x720): the back one 0.7 of
    the frame tall, feet at 0.75 of its height, the front one 0.9 tall, cut by the bottom,
    its centre ``shift`` of the width to the right (drawn at random). Both are boxed (their
    seen boxes, as the box detector gives them) and image mode must publish a pose on each.

    The back one's box (a close-up, >= half the frame tall) holds the front one, on whom the
    landmark model lands. Seed 25 (shift 0.10): the close-up's twin gets the tight try, which
    finds the back one (main published the front one only). Seed 6 (shift drawn in 0-0.1):
    the tight try lands on the front one too; the box tried with the front one painted out
    (``PoseCore._behind``) finds the back one (without that try: the front one only). Of
    seeds 0-59 at that shift, the painted try turns 2 misses into finds and no find into a
    miss; seed 6 is one of the two, and stays found with the paint's body dilated instead of
    drawn grown (``body_mask``'s two ways; the other, seed 10, does not: such a scene is found
    or not on a few hundred pixels of paint)."""
    out, _ = tiny
    rng = np.random.default_rng(seed)
    photos = sources.backgrounds(out.parent / "cache")
    names = sorted(photos)
    photo = cv2.imread(str(photos[names[seed % len(names)]]))
    assert photo is not None
    w, h = 1280, 720
    bg = fit_background(np.asarray(photo, np.uint8), w, h, rng)
    dx = rng.uniform(*shift)
    placements: list[Placement] = []
    for tall, feet, cx in ((0.7 * h, 0.75 * h, 0.5 * w), (0.9 * h, 1.05 * h, (0.5 + dx) * w)):
        c = bank.cutouts[int(rng.integers(len(bank.cutouts)))]
        s = tall / c.mask_height
        pw, ph = pasted_extent(Placement(c, s, 0, 0))
        placements.append(Placement(c, s, round(cx - pw / 2), round(feet - ph),
                                    bool(rng.random() < 0.5), identity=len(placements) + 1))
    image, people = compose(bg, placements)
    boxes = np.array([[p.bbox[0], p.bbox[1], p.bbox[0] + p.bbox[2], p.bbox[1] + p.bbox[3]]
                      for p in people], np.float32)
    assert (boxes[:, 3] - boxes[:, 1] >= 0.5 * h).all()  # close-ups both
    config = Config.model_validate({"models": {"dir": str(manifest.folder), "threads": 1}})
    pipe = build_pipeline(config, timings=False, mode="image")
    dets = Detections(boxes, np.array([0.9, 0.8], np.float32), np.zeros((2, 0, 2), np.float32),
                      box_regions(boxes, BoxDetectorConfig().roi_scale))
    frame = Frame(np.ascontiguousarray(image), 0, 1_000_000_000, 1.0, name="behind.png")
    payload = pipe.core.step(frame, DetectorResult(dets, 0, 1.0, 0.0)).annotation.payload
    assert len(payload["persons"]) == 2, payload["persons"]
    preds = []
    for q in payload["persons"]:
        kp = np.asarray(coco_person(payload, q, 0, 0)["keypoints"], np.float64).reshape(17, 3)
        preds.append(Person(kp, match_box(kp[kp[:, 2] > 0, :2], w, h)))
    gt = [Person(p.keypoints, match_box(p.keypoints[p.keypoints[:, 2] > 0, :2], w, h))
          for p in people]
    assert len(match_frame(gt, preds).pairs) == 2  # a pose on each, box IoU >= 0.5


def test_a_far_walker_beside_a_near_person_is_kept_in_a_stream(
        tiny: tuple[Path, dict[str, Any]], bank: Bank, manifest: Manifest) -> None:
    """Every-frame stream, 1280x720: a near person 324 px tall, and 10 px right of them a far
    one 61 px tall, walking right 1 px a frame; the near one is detected at frame 0, the far
    one at frame 3. The far one lies in the near one's body box widened for hands and hair
    (``Tracker.PART_MARGIN``), under 0.6 of their height: the part rule took them for the near
    one's hand two frames after they were found, and they were never published (0 of 40
    frames). Their first pose fitted the box they were found in, so they are a person: found
    in the 37 frames from their detection on, but for the first (confirmation)."""
    out, _ = tiny
    rng = np.random.default_rng(0)
    photos = sources.backgrounds(out.parent / "cache")
    photo = cv2.imread(str(photos[sorted(photos)[0]]))
    assert photo is not None
    w, h = 1280, 720
    bg = fit_background(np.asarray(photo, np.uint8), w, h, rng)
    near_c, far_c = (bank.cutouts[int(rng.integers(len(bank.cutouts)))] for _ in range(2))
    s_near, s_far = 0.45 * h / near_c.mask_height, 60 / far_c.mask_height
    nw, nh = pasted_extent(Placement(near_c, s_near, 0, 0))
    near = Placement(near_c, s_near, round(0.4 * w - nw / 2), round(0.85 * h - nh), identity=1)
    config = Config.model_validate({"models": {"dir": str(manifest.folder), "threads": 1}})
    core = build_pipeline(config, timings=False, mode="every-frame").core
    found, ids = [], set()
    for t in range(40):
        far = Placement(far_c, s_far, near.x + nw + 10 + t, near.y + nh // 3, identity=2)
        image, people = compose(bg, [near, far])
        detected = None
        if t in (0, 3):  # the near one, then the far one: their seen boxes
            p = people[0 if t == 0 else 1]
            box = np.array([[p.bbox[0], p.bbox[1], p.bbox[0] + p.bbox[2],
                             p.bbox[1] + p.bbox[3]]], np.float32)
            detected = DetectorResult(Detections(
                box, np.array([0.8], np.float32), np.zeros((1, 0, 2), np.float32),
                box_regions(box, BoxDetectorConfig().roi_scale)), t, t / 30, 0.0)
        frame = Frame(np.ascontiguousarray(image), t, round(t / 30 * 1e9) + 1, t / 30)
        payload = core.step(frame, detected).annotation.payload
        preds = []
        for q in payload["persons"]:
            kp = np.asarray(coco_person(payload, q, 0, 0)["keypoints"], np.float64).reshape(17, 3)
            preds.append(Person(kp, match_box(kp[kp[:, 2] > 0, :2], w, h)))
            ids.add(q["id"])
        gt = [Person(p.keypoints, match_box(p.keypoints[p.keypoints[:, 2] > 0, :2], w, h))
              for p in people]
        found.append(any(g == 1 for g, _ in match_frame(gt, preds).pairs))
    assert people[1].bbox[3] < 0.6 * people[0].bbox[3]  # short enough to pass for a part
    assert sum(found) >= 33, found  # measured: 36 of the 37
    assert ids == {1, 2}


def test_group_layout_hides_the_back_rows_legs(tiny: tuple[Path, dict[str, Any]],
                                               tmp_path: Path) -> None:
    """``--layout groups``: rows of upright people, the rows in front hiding the legs of those
    behind (ankles inside the frame but covered, ``v`` 1), the front row cut by the bottom."""
    out, _ = tiny
    settings = Settings(**{**TINY.__dict__, "frames": 3, "clips": 0, "layout": "groups"})
    gt = generate(tmp_path / "g", settings, out.parent / "cache")
    assert gt["generator"]["layout"] == "groups"
    hidden = seen = 0
    for f in gt["frames"]:
        people = f["persons"]
        assert len(people) >= 5  # 2-3 rows of 3-6, the rows behind one fewer
        tops = sorted({round(p["bbox"][1] / f["height"], 1) for p in people})
        assert len(tops) >= 2  # heads at two heights at least
        for p in people:
            kp = np.asarray(p["keypoints"], float).reshape(17, 3)
            ankles = kp[[Coco17.LEFT_ANKLE, Coco17.RIGHT_ANKLE], 2]
            hidden += int((ankles == 1).all())
            seen += int((ankles == 2).any())
    assert hidden >= 4 and seen >= 1, (hidden, seen)
