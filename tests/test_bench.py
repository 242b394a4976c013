"""edge-bench: a short real run validated against its schema, plot, comparison, bad flags.

No speed is asserted: this runs on shared, noisy machines.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge.bench import main
from edge.bench.people import ComposedFrames, PacedSource, PersonClip, grid_shape
from edge.bench.report import ResultError, compare, load_result, schema
from edge.sources.base import SourceEnd


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One short real run: 1 thread, 3 timed calls, 1 and 2 people and 2 small people for 1.5 s
    each."""
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "run.json", "png": out / "run.png", "md": out / "run.md"}
    code = main(["--threads", "1", "--repeats", "3", "--warmup", "1", "--people", "1,2",
                 "--seconds", "1.5", "--warmup-s", "1", "--tile", "256",
                 "--small-people", "2", "--small-px", "96",
                 "--json", str(paths["json"]), "--plot", str(paths["png"]),
                 "--markdown", str(paths["md"])])
    assert code == 0
    return paths


def test_short_run_is_valid_against_schema(short_run: dict[str, Path]) -> None:
    result = json.loads(short_run["json"].read_text())
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(result, schema())
    stages = {c["stage"] for c in result["stages"]}
    assert stages == {"detector", "pose2d", "lifter"}
    assert any(c["model"] == "world" for c in result["stages"])  # always measured
    for c in result["stages"]:
        assert c["runs"] == 3 and c["threads"] in (1, None)
        assert c["ms"]["p10"] <= c["ms"]["p50"] <= c["ms"]["p90"]
        assert c["budget_ratio"] == pytest.approx(c["fps"]["p50"] / c["budget_fps"], rel=1e-2)
    assert [(e["people"], e["person_px"]) for e in result["e2e"]] == [(1, None), (2, None),
                                                                      (2, 96)]
    assert result["e2e"][2]["frame_size"] == [1280, 720]
    for e in result["e2e"]:
        assert e["chunks"] == 2  # default rounds, interleaved
        assert e["frames"] > 0 and e["latency_ms"] is not None
        assert e["people_seen"]["max"] <= e["people"]
        assert e["peak_rss_mb"] > 0
    host = result["host"]
    assert host["cores_logical"] >= 1 and host["runtime"]["name"]
    used = {c["model"] for c in result["stages"]} - {"world"}
    hashes = {m["key"]: m["sha256"] for m in result["models"]}
    assert used <= set(hashes)


def test_plot_and_markdown_are_written(short_run: dict[str, Path]) -> None:
    png = short_run["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = short_run["md"].read_text()
    assert "### Stages alone" in md and "### End to end" in md and "| stage |" in md


def _slower(result: dict[str, Any]) -> dict[str, Any]:
    r = copy.deepcopy(result)
    for c in r["stages"]:
        c["fps"] = {k: v / 2 for k, v in c["fps"].items()}
    for e in r["e2e"]:
        e["fps"] = e["fps"] / 2
    return r


def test_compare_two_json_files(short_run: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    new = load_result(short_run["json"])
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(_slower(new)))
    assert main(["--from-json", str(short_run["json"]), "--compare", str(old_path)]) == 0
    out = capsys.readouterr().out
    assert "new/old" in out and "2.000" in out  # every figure twice the halved one
    text = compare(new, new)
    assert "1.000" in text and "different CPUs" not in text and "different model" not in text
    other = copy.deepcopy(new)
    other["models"][0]["sha256"] = "0" * 64
    assert f"different model files under the same key: {new['models'][0]['key']}" in \
        compare(new, other)


@pytest.mark.parametrize(("argv", "message"), [
    (["--threads", "0"], "integers >= 1"),
    (["--threads", "a,b"], "not a comma-separated list"),
    (["--people", "-2"], "integers >= 1"),
    (["--precision", "fp16"], "choose from float, int8"),
    (["--landmark", "huge"], "choose from lite, full, heavy"),
    (["--repeats", "0"], "must be > 0"),
    (["--rounds", "0"], "must be > 0"),
    (["--budget-pose2d", "-5"], "must be > 0"),
    (["--frame-size", "big"], "WIDTHxHEIGHT"),
    (["--clip", "/nonexistent.mp4"], "no such file"),
    (["--no-stages", "--no-e2e"], "nothing to measure"),
    (["--warmup-s", "-1"], "must be >= 0"),
])
def test_bad_flags_exit_2_with_a_clear_message(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_compare_files(tmp_path: Path, short_run: dict[str, Path],
                           capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    assert main(["--from-json", str(short_run["json"]), "--compare", str(missing)]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    assert main(["--from-json", str(short_run["json"]), "--compare", str(junk)]) == 2
    assert "not readable as JSON" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ResultError, match="not an edge-bench result"):
        load_result(other)
    broken = json.loads(short_run["json"].read_text())
    del broken["host"]["cpu_model"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    with pytest.raises(ResultError, match="invalid at host"):
        load_result(bad)


def _clip(n: int = 5, size: int = 8) -> PersonClip:
    tiles = np.stack([np.full((size, size, 3), i, np.uint8) for i in range(n)])
    return PersonClip("synthetic", 0, tiles)


@pytest.mark.parametrize(("people", "shape"), [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)),
                                               (4, (2, 2)), (6, (2, 3)), (9, (3, 3))])
def test_grid_shape(people: int, shape: tuple[int, int]) -> None:
    assert grid_shape(people) == shape


def test_composed_frames_play_back_and_forth_and_differ() -> None:
    frames = ComposedFrames([_clip(5)], 2)
    assert frames.image(0).shape == (8, 16, 3)
    first = [int(frames.image(i)[0, 0, 0]) for i in range(10)]
    assert first == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]  # ping-pong, no jump
    second = [int(frames.image(i)[0, 8, 0]) for i in range(10)]
    assert second != first  # same clip, another time


def test_small_people_are_shrunk_and_scattered_over_a_frame() -> None:
    clip = PersonClip("x", 0, np.full((3, 32, 32, 3), 200, np.uint8))
    frames = ComposedFrames([clip], 6, canvas=(640, 360), tile_px=40)
    img = frames.image(0)
    assert img.shape == (360, 640, 3)
    person = img == 200
    assert person.all(axis=2).sum() == 6 * 40 * 40  # six 40-px tiles, none overlapping
    assert (img[~person.all(axis=2)] == 114).all()  # grey elsewhere
    cells = {(y // 180, x // 214) for y, x in frames.cell_origin}
    assert len(cells) == 6  # one per grid cell
    with pytest.raises(ValueError, match="does not fit"):
        ComposedFrames([clip], 6, canvas=(200, 100), tile_px=80)


def test_paced_source_stamps_and_ends() -> None:
    src = PacedSource(ComposedFrames([_clip()], 1), fps=200.0, n_frames=3)
    got = [src.read() for _ in range(3)]
    assert [f.frame_id for f in got] == [0, 1, 2]
    stamps = [f.t_capture_ns for f in got]
    assert stamps == sorted(stamps) and stamps[2] - stamps[0] >= 9e6  # 2 periods of 5 ms
    with pytest.raises(SourceEnd):
        src.read()
    with pytest.raises(ValueError, match="fps must be > 0"):
        PacedSource(ComposedFrames([_clip()], 1), fps=0)
    with pytest.raises(ValueError, match="tiles must be"):
        PersonClip("x", 0, np.zeros((3, 4, 5, 3), np.uint8))
