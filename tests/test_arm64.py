"""The x86-arm64 comparison of deploy/ci/arch_compare.py, on x86: a reference made from real
frames agrees with itself, and the comparison fails when a raw output or a person moves beyond
its tolerance or a person is missing. (The arm64 side runs in deploy/ci/arm64-check.sh.)"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edge import cli

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy" / "ci"))
import arch_compare  # noqa: E402


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ref")
    clip = d / "clip.mkv"
    arch_compare.cmd_clip(REPO / "edge" / "assets" / "sports2d_demo.mp4", clip, 96, 6)
    assert cli.main(["run", "--source", str(clip), "--every-frame", "--out", str(d / "x86"),
                     "--no-progress"]) == 0
    arch_compare.cmd_inputs(d, clip)
    arch_compare.cmd_outputs(d, "x86")
    return d


def _side(reference: Path, tmp_path: Path) -> Path:
    d = tmp_path / "cmp"
    shutil.copytree(reference, d)
    shutil.copy(d / "x86.npz", d / "arm64.npz")
    shutil.copytree(d / "x86", d / "arm64")
    return d


def test_identical_sides_agree(reference: Path, tmp_path: Path) -> None:
    d = _side(reference, tmp_path)
    assert arch_compare.cmd_compare(d) == 0
    report = json.loads((d / "agreement.json").read_text())
    assert report["failures"] == []
    assert report["raw"]["landmark_full_int8/landmarks[xy]"]["max"] == 0.0
    assert report["e2e"]["pose_2d_frac_width"]["n"] > 0


@pytest.mark.parametrize(("key", "channel", "shift", "what"), [
    ("landmark_full_int8/landmarks", 0, 3.0, "landmark_full_int8/landmarks[xy]"),
    ("detector_int8/scores", None, 0.5, "detector_int8/scores"),
    ("lifter_single_int8/joints_3d", None, 0.01, "lifter_single_int8/joints_3d"),
])
def test_a_raw_output_beyond_its_tolerance_fails(reference: Path, tmp_path: Path, key: str,
                                                 channel: int | None, shift: float,
                                                 what: str) -> None:
    d = _side(reference, tmp_path)
    arrays = dict(np.load(d / "arm64.npz"))
    a = arrays[key].copy()
    if channel is None:
        a.reshape(-1)[0] += shift
    else:
        a.reshape(a.shape[0], -1, 5)[0, 0, channel] += shift
    arrays[key] = a
    np.savez(d / "arm64.npz", **arrays)
    assert arch_compare.cmd_compare(d) == 1
    assert any(what in f for f in json.loads((d / "agreement.json").read_text())["failures"])


def test_a_moved_or_missing_person_fails(reference: Path, tmp_path: Path) -> None:
    d = _side(reference, tmp_path)
    path = d / "arm64" / "annotations.jsonl"
    frames = [json.loads(line) for line in path.read_text().splitlines()]
    last = frames[-1]["persons"][0]
    last["pose_2d"]["nose"]["x"] += 0.05  # 5 % of the frame width
    path.write_text("".join(json.dumps(f) + "\n" for f in frames))
    assert arch_compare.cmd_compare(d) == 1
    frames[-1]["persons"] = []
    path.write_text("".join(json.dumps(f) + "\n" for f in frames))
    assert arch_compare.cmd_compare(d) == 1
    fails = json.loads((d / "agreement.json").read_text())["failures"]
    assert any("person ids" in f for f in fails)
