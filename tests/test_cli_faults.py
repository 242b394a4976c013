"""``edge-pose`` as a user runs it, stopped or cut off: signals mid-run and a closed stdout.

Real processes on the real demo clip and models: a run stopped by SIGTERM or Ctrl-C finishes
its outputs as at the source's end and says so with exit code 128 + the signal's number; a
Ctrl-C while the models load, and a reader that closes the pipe, end without a traceback.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "edge.cli"]


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize(("sig", "again_s"), [(signal.SIGTERM, None), (signal.SIGINT, None),
                                             (signal.SIGTERM, 0.05), (signal.SIGTERM, 0.5)])
def test_a_signal_mid_run_finishes_the_outputs(tmp_path: Path, sig: signal.Signals,
                                               again_s: float | None) -> None:
    """SIGTERM used to kill ``run`` at once: no stats.json, exit 143 without a word. Twice
    50 ms apart is what GNU ``timeout`` sends (to the process, then its group): that stopped
    at once, with no stats.json and exit 130; and a repeat landing after the run's loop had
    ended (its handler gone) killed the process while it wrote stats.json."""
    out = tmp_path / "out"
    proc = subprocess.Popen([*CLI, "run", "--source", "demo", "--every-frame", "--out", str(out),
                             "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while _lines(out / "annotations.jsonl") < 5 and time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        if again_s is not None:
            time.sleep(again_s)
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    assert f"interrupted by {sig.name}" in stderr
    stats = json.loads((out / "stats.json").read_text())
    done = stats["frames_processed"]
    assert 5 <= done < 230  # stopped early: the clip has 230 frames
    lines = (out / "annotations.jsonl").read_text().splitlines()
    assert len(lines) == done and all(json.loads(line) for line in lines)
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == done
    assert f"frames processed {done}" in stdout


def test_a_stop_while_the_camera_is_away_is_prompt_and_clean(tmp_path: Path) -> None:
    """No camera (the seam: none on this machine): the reader waited its whole 10 s read
    timeout before it saw a SIGTERM, and the video writer, told to finish by the same signal
    from GNU ``timeout`` (the process group), was gone by then: "the writer process failed",
    exit 1, 8 s late. Now: out within a second or two, exit 143, every output closed."""
    out = tmp_path / "out"
    proc = subprocess.Popen([*CLI, "run", "--source", "/dev/video99", "--out", str(out),
                             "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 120
        while not (out / "annotations.jsonl").exists() and time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        time.sleep(1.0)  # the core running, the reader waiting on the absent camera
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)  # as GNU timeout: the process, then its group
        time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "writer process failed" not in stderr, stderr
    assert took < 5, f"stopped {took:.1f} s after SIGTERM"
    assert json.loads((out / "stats.json").read_text())["frames_processed"] == 0
    assert "cannot open" in stderr and "[ WARN" not in stderr, stderr  # OpenCV's own: quiet


def _numpy_loaded(pid: int) -> bool:
    """Whether process ``pid`` has mapped numpy's extension (inside edge.cli's guarded imports)."""
    try:
        return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize(("args", "after_s"), [
    (["run", "--source", "demo"], 0.3),
    *((["serve", "--source", "demo", "--port", "0"], t) for t in (0.0, 0.1, 0.3, 0.5)),
])
def test_ctrl_c_while_loading_is_no_traceback(tmp_path: Path, args: list[str],
                                              after_s: float) -> None:
    """The installed command (``python -m`` imports edge.cli twice, which hides a case): a
    Ctrl-C while the parser imported the fuse commands was a KeyboardInterrupt traceback.

    The moments are counted from numpy's arrival (edge.cli's first imports of its own, the
    guarded ones), not from the start: on a loaded host the interpreter's own start-up (before
    any code of ours can catch a Ctrl-C) takes longer than a fixed moment.
    """
    script = Path(sys.executable).parent / "edge-pose"
    proc = subprocess.Popen([str(script), *args, *(["--out", str(tmp_path)]
                                                    if args[0] == "run" else [])],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _numpy_loaded(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "numpy never loaded"
        time.sleep(0.005)
    time.sleep(after_s)  # importing numpy, OpenCV, scipy, the parser, or loading the models
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    # 130, or death by SIGINT (-2, which a shell shows as 130 too): CPython ends so when the
    # Ctrl-C landed in code run through PyRun_String during an import, even once caught.
    interrupted = proc.returncode in (130, -2) and "interrupted" in stderr
    assert interrupted or proc.returncode == 0, stderr


def test_a_closed_stdout_is_no_traceback() -> None:
    """``edge-pose models list | head -1``: the reader is gone; exit as SIGPIPE would."""
    r, w = os.pipe()
    proc = subprocess.Popen([*CLI, "models", "list"], cwd=ROOT, stdout=w, stderr=subprocess.PIPE,
                            text=True)
    os.close(w)
    os.close(r)  # the reader leaves before the first line
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert proc.returncode in (0, 128 + signal.SIGPIPE), stderr


def _file_size_limit(limit: int) -> None:
    """In the child: writes past ``limit`` bytes fail with EFBIG, as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_a_full_disk_mid_run_is_a_message_and_whole_lines(tmp_path: Path) -> None:
    """Every output hits the limit: the run stops (exit 1) naming the file; the JSONL keeps
    whole lines. Writing stats.json on the full disk used to end in an OSError traceback."""
    out = tmp_path / "out"
    # No video: the limit would also refuse the video writer's shared memory (a file in
    # /dev/shm), which a full disk does not.
    config = tmp_path / "c.toml"
    config.write_text("[output]\nvideo = false\n")
    run = subprocess.run([*CLI, "run", "--source", "demo", "--every-frame", "--out", str(out),
                          "--no-progress", "--config", str(config)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         preexec_fn=lambda: _file_size_limit(100_000))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "annotations.jsonl: write failed" in run.stderr
    assert "frames processed" in run.stdout  # the report is printed all the same
    lines = (out / "annotations.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line) for line in lines)
    # What it says is kept is what is in the file (it used to count the frame whose line
    # failed: "the annotations of the 47 frames processed are kept" over 46 lines).
    kept = re.search(r"the annotations of the (first )?(\d+) (of the \d+ )?frames processed "
                     r"are kept", run.stderr)
    assert kept is not None and int(kept.group(2)) == len(lines), run.stderr
    stats = out / "stats.json"
    assert not stats.exists() or json.loads(stats.read_text())["frames_processed"] >= len(lines)
    assert not list(out.glob(".*.tmp"))


def test_device_id_on_the_command_line(tmp_path: Path) -> None:
    """Every ``run`` wrote device_id "edge-pose", so the runs of several cameras could not be
    fused (``fuse``: "device edge-pose is also another file's device"), and a config file was
    the only way to name them."""
    clip = ROOT / "tests" / "media" / "vfr_96x54.mp4"
    r = subprocess.run([*CLI, "run", "--source", str(clip), "--every-frame", "--device-id",
                        "cam02", "--out", str(tmp_path / "o"), "--no-progress"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "o" / "annotations.jsonl").read_text().splitlines()]
    assert len(rows) == 46 and {row["device_id"] for row in rows} == {"cam02"}
    bad = subprocess.run([*CLI, "run", "--source", str(clip), "--device-id", "cam 2", "--out",
                          str(tmp_path / "b")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "annotation.device_id" in bad.stderr, bad.stderr
    assert not (tmp_path / "b").exists()


def test_the_service_refuses_a_photo_and_says_where_photos_go(tmp_path: Path) -> None:
    """``serve --source photo.jpg`` posed it, ended its one-frame run and took the viewer down
    after 1.5 s; a daemon config with a folder of photos did the same."""
    cv2.imwrite(str(tmp_path / "p.jpg"), np.zeros((64, 64, 3), np.uint8))
    serve = subprocess.run([*CLI, "serve", "--source", str(tmp_path / "p.jpg"), "--port", "0"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    config = tmp_path / "d.toml"
    config.write_text(f"[source]\nuri = {str(tmp_path)!r}\n[mqtt]\nenabled = false\n")
    daemon = subprocess.run([*CLI, "daemon", "--config", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    for r in (serve, daemon):
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "source.uri" in r.stderr and "POST /v1/pose" in r.stderr, r.stderr


def test_outputs_that_would_overwrite_the_source_are_refused(tmp_path: Path) -> None:
    """``--source out/annotated.mp4 --out out`` truncated the video being read (20 of its 230
    frames read, the rest lost); a folder of photos as ``out/annotated`` would be drawn over."""
    out = tmp_path / "out"
    (out / "annotated").mkdir(parents=True)
    video = out / "annotated.mp4"
    video.write_bytes((ROOT / "edge" / "assets" / "sports2d_demo.mp4").read_bytes())
    cap = cv2.VideoCapture(str(video))
    ok, image = cap.read()
    cap.release()
    assert ok
    photo = out / "annotated" / "photo.jpg"
    assert cv2.imwrite(str(photo), image)
    before = {p: p.read_bytes() for p in (video, photo)}
    for source in (video, out / "annotated"):
        run = subprocess.run([*CLI, "run", "--source", str(source), "--out", str(out),
                              "--every-frame" if source == video else "--image",
                              "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2, run.stderr
        assert "would be" in run.stderr and "choose another --out" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert not (out / "annotations.jsonl").exists()


@pytest.mark.parametrize("args", [
    ["run", "--source", "demo", "--out", ""],
    ["run", "--source", "demo", "--config", " "],
    ["validate-config", ""],
    ["fuse", "--jsonl", "a.jsonl", "b.jsonl", "--out", ""],
    ["calibrate", "--images", "", "--out", "cam.yml"],
])
def test_an_empty_path_is_refused(tmp_path: Path, args: list[str]) -> None:
    """An empty path (an unset shell variable) was the current folder: `run --out ""` wrote
    its outputs wherever the command ran. Now exit 2 naming the option, nothing written."""
    run = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2, run.stderr
    assert "an empty path" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []
