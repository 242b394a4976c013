"""The annotated video in a process of its own (edge.sinks.video_process), with real frames of
the demo clip, real files and real signals: every frame in a file OpenCV reads back; a killed
writer is reported and counted while the core goes on (through the Runtime on a real clip too);
an unwritable path is a clear error; drop-oldest never makes the core wait; no process is left
behind after a stop, a SIGTERM or a Ctrl-C of the parent."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEMO_CLIP, require
from testdata import demo_segment

from edge.annotation import Annotation
from edge.app import Runtime
from edge.config import Config
from edge.runtime import Manifest
from edge.sinks import SinkError
from edge.sinks.video import draw_annotation
from edge.sinks.video_process import (
    IN_FLIGHT,
    META_BYTES,
    PROFILE_STAGES,
    VideoProcessSink,
    _drawn_part,
    ring_slots,
)
from edge.types import U8, Frame

REPO = Path(__file__).resolve().parent.parent

PERSON = {"id": 1, "bbox": {"x1": 0.4, "y1": 0.2, "x2": 0.6, "y2": 0.8},
          "pose_2d": {"left_shoulder": {"x": 0.45, "y": 0.3}, "left_hip": {"x": 0.45, "y": 0.6}}}


def _item(image: U8, i: int) -> tuple[Frame, Annotation]:
    payload = {"frame_id": i, "persons": [PERSON]}
    return Frame(image, i, i * 40_000_000, i / 25), Annotation(i, i / 25, 1, payload)


def _read_all(path: Path) -> list[U8]:
    cap = cv2.VideoCapture(str(path))
    got: list[U8] = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        got.append(np.asarray(frame, np.uint8))
    cap.release()
    return got


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` has exited (reaped or a zombie) within ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
        except (FileNotFoundError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _shm_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("psm_")}


@pytest.mark.parametrize(("codec", "name"), [("mp4v", "v.mp4"), ("mjpeg", "v.mp4"),
                                             ("mjpeg", "v.avi")])
def test_every_frame_is_written_and_read_back(tmp_path: Path, codec: str, name: str,
                                              demo_frames: dict[int, U8],
                                              capfd: pytest.CaptureFixture[str]) -> None:
    """Lossless: all frames in the finished file at the source's size, the skeleton drawn, the
    process ended and its shared memory gone after close; the writer's CPU per stage reported;
    Motion JPEG in MP4 without OpenCV's notice about the container's tag."""
    image = demo_frames[120]
    h, w = image.shape[:2]
    before = _shm_segments()
    path = tmp_path / name
    sink = VideoProcessSink(path, 25.0, codec, lossless=True, nice=3)  # type: ignore[arg-type]
    n = 30
    for i in range(n):
        sink.write(*_item(image, i))
    assert sink.slots == 8
    # The writer has drawn frames, so it has lowered its priority: 3 steps below this process.
    stat = Path(f"/proc/{sink.pid}/stat").read_text().rsplit(") ", 1)[1].split()
    assert int(stat[16]) == min(19, os.nice(0) + 3)
    sink.close()
    sink.close()  # twice is fine
    got = _read_all(path)
    assert len(got) == n and sink.written == n and sink.dropped == 0 and sink.error is None
    assert got[0].shape == (h, w, 3)
    x, y0, y1 = round(0.45 * w), round(0.3 * h), round(0.6 * h)
    diff = np.abs(got[-1][y0:y1, x - 1:x + 2].astype(int) - image[y0:y1, x - 1:x + 2]).mean()
    assert diff > 20, f"no skeleton drawn ({diff:.1f})"
    assert sink.pid is not None and _gone(sink.pid, 1.0)
    assert _shm_segments() <= before
    with pytest.raises(SinkError, match="closed"):
        sink.write(*_item(image, n))
    assert sink.profile is not None and set(sink.profile) == set(PROFILE_STAGES)
    assert sink.profile["encode"] > 0 and sink.profile["start"] > 0
    assert "OpenCV: FFMPEG" not in capfd.readouterr().err


def test_drawing_in_place_draws_the_same(demo_frames: dict[int, U8]) -> None:
    """The writer draws in its ring slot: the same pixels as a drawn copy, on the slot itself."""
    image = demo_frames[120]
    _, ann = _item(image, 3)
    copied = draw_annotation(image, ann)
    assert not np.array_equal(copied, image)  # drawn, and the source left as it was
    slot = image.copy()
    assert draw_annotation(slot, ann, inplace=True) is slot
    assert np.array_equal(slot, copied)


def test_ring_is_bounded_in_bytes() -> None:
    assert ring_slots(1768 * 994 * 3, 64 << 20) == (8, 5341184)
    slots, stride = ring_slots(3840 * 2160 * 3, 64 << 20)
    assert slots == 2 and slots * stride <= 64 << 20
    assert ring_slots(7680 * 4320 * 3, 64 << 20)[0] == 1  # one slot at least
    # What is drawn of 32 people of 33 joints fits a slot's data area.
    joints = {f"joint_{j}": {"x": 0.123456789, "y": 0.987654321} for j in range(33)}
    persons = [{"id": 1000 + k, "bbox": {"x1": 0.1, "y1": 0.2, "x2": 0.3, "y2": 0.4},
                "pose_2d": joints} for k in range(32)]
    part = _drawn_part(Annotation(1, 0.0, 32, {"frame_id": 1, "persons": persons}))
    assert len(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)) < META_BYTES


def test_killed_writer_is_reported_counted_and_never_blocks(
        tmp_path: Path, demo_frames: dict[int, U8], caplog: pytest.LogCaptureFixture) -> None:
    """SIGKILL of the writer mid-run: later writes return at once (counted as dropped), the
    error is logged once and raised by close, nothing hangs."""
    image = demo_frames[0]
    sink = VideoProcessSink(tmp_path / "k.mp4", 25.0, lossless=True, stall_s=20.0)
    for i in range(10):
        sink.write(*_item(image, i))
    assert sink.pid is not None
    os.kill(sink.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="edge.sinks.video_process"):
        for i in range(10, 40):
            sink.write(*_item(image, i))
        with pytest.raises(SinkError, match="killed by SIGKILL"):
            sink.close()
    assert time.monotonic() - t0 < 10
    assert sink.written + sink.dropped == 40 and sink.dropped >= 30
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "writer process failed" in errors[0].getMessage()


def test_frames_of_another_size_are_scaled_to_the_video(tmp_path: Path,
                                                        demo_frames: dict[int, U8],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A live camera that comes back at another size: its frames are scaled to the video's
    (once warned). They used to end the video: every later frame dropped, close() raised."""
    path = tmp_path / "sizes.mp4"
    big = demo_frames[0]
    small: U8 = np.asarray(cv2.resize(demo_frames[0], (640, 360)), np.uint8)
    sink = VideoProcessSink(path, 25.0, lossless=True)
    with caplog.at_level(logging.WARNING, "edge.sinks.video_process"):
        for i in range(12):
            sink.write(*_item(big if i < 6 else small, i))
        sink.close()
    assert sink.written == 12 and sink.dropped == 0
    got = _read_all(path)
    assert len(got) == 12 and {g.shape for g in got} == {big.shape}
    assert sum("are scaled to it" in r.message for r in caplog.records) == 1


def test_unwritable_path_is_a_clear_error(tmp_path: Path, demo_frames: dict[int, U8]) -> None:
    """A path that cannot be a file is refused at once; a file that becomes unwritable after
    the start (replaced by a folder) is the writer's error, reported without a hang."""
    (tmp_path / "adir").mkdir()
    with pytest.raises(SinkError, match=r"adir: cannot be written \(.*directory"):
        VideoProcessSink(tmp_path / "adir", 25.0)
    path = tmp_path / "later.mp4"
    sink = VideoProcessSink(path, 25.0, lossless=True, stall_s=20.0)
    path.unlink()
    path.mkdir()
    for i in range(12):
        sink.write(*_item(demo_frames[0], i))
    with pytest.raises(SinkError, match="cannot open an mp4v writer"):
        sink.close()
    assert sink.written == 0 and sink.dropped == 12


def test_realtime_drops_oldest_and_never_waits(tmp_path: Path,
                                               demo_frames: dict[int, U8]) -> None:
    """A writer that stops (SIGSTOP) costs its own frames, oldest first, never the core's time;
    once it goes on, the file ends with the newest frame."""
    images = [demo_frames[0], demo_frames[120], demo_frames[168]]
    path = tmp_path / "rt.mp4"
    sink = VideoProcessSink(path, 25.0, lossless=False)
    # The child has started and drawn a frame before it is stopped.
    first = 0
    deadline = time.monotonic() + 30
    while sink.written == 0 and time.monotonic() < deadline:
        sink.write(*_item(images[0], first))
        first += 1
        time.sleep(0.05)
    assert sink.pid is not None
    os.kill(sink.pid, signal.SIGSTOP)
    try:
        n = 40
        t0 = time.monotonic()
        for i in range(n):
            sink.write(*_item(images[1] if i < n - 1 else images[2], first + i))
        assert time.monotonic() - t0 < 5.0  # 40 copies; never a wait on the stopped child
        assert sink.dropped >= n - sink.slots - IN_FLIGHT
    finally:
        os.kill(sink.pid, signal.SIGCONT)
    sink.close()
    got = _read_all(path)
    assert len(got) == sink.written and sink.written + sink.dropped == first + n
    last = got[-1].astype(int)
    assert np.abs(last - images[2]).mean() < np.abs(last - images[1]).mean()


_PARENT = """
import sys, time
from pathlib import Path
import cv2
from edge.annotation import Annotation
from edge.sinks.video_process import VideoProcessSink
from edge.types import Frame
cap = cv2.VideoCapture(sys.argv[1]); ok, image = cap.read(); cap.release()
sink = VideoProcessSink(Path(sys.argv[2]), 25.0, lossless=True)
try:
    for i in range(15):
        ann = Annotation(i, i / 25, 0, {"frame_id": i, "persons": []})
        sink.write(Frame(image, i, i, i / 25), ann)
    print(sink.pid, flush=True)
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    sink.close()
    print("closed", sink.written, flush=True)
"""


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_no_process_is_left_after_the_parent_stops(tmp_path: Path, how: str) -> None:
    """SIGTERM kills the parent (no handler): its writer sees the pipe's end, finishes the file
    and exits. Ctrl-C reaches the whole process group: the writer ignores it, the parent closes
    it, every frame is in the file."""
    path = tmp_path / "p.mp4"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(DEMO_CLIP), str(path)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        if how == "sigterm":
            parent.send_signal(signal.SIGTERM)
        else:
            os.killpg(parent.pid, signal.SIGINT)
        out, _ = parent.communicate(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert _gone(child), "the writer process outlived its parent"
    if how == "ctrl-c":
        assert parent.returncode == 0 and out.split() == ["closed", "15"]
    # After SIGTERM the writer finished the frames it had been given: a valid file.
    assert 1 <= len(_read_all(path)) <= 15


def test_runtime_goes_on_when_its_writer_is_killed(manifest: Manifest, tmp_path: Path) -> None:
    """Every-frame run of a real clip with the real models: the writer killed at frame 5, the
    core still processes every frame, the run's close reports the writer's death (exit code 1,
    ``stats.error``) and the snapshot counts the lost frames."""
    clip = demo_segment(tmp_path / "clip.mp4", 100, 124, half=True)
    config = Config.model_validate({
        "models": {"dir": str(manifest.folder), "threads": 1}, "source": {"uri": str(clip)},
        "scheduler": {"mode": "every-frame"},
        "output": {"dir": str(tmp_path / "out"), "jsonl": False}})
    rt = Runtime(config)
    rt.open()
    rt.add_file_outputs(tmp_path / "out")
    (video,) = [o for o in rt.outputs if isinstance(o, VideoProcessSink)]
    assert video.nice >= 1 and video.lossless
    # output.video_codec = auto: Motion JPEG (the least writer CPU) in every-frame runs.
    assert video.codec == "mjpeg" and video.path.name == "annotated.mp4"

    def on_step(frame: Frame, result: object) -> None:
        if frame.frame_id == 5 and video.pid is not None:
            os.kill(video.pid, signal.SIGKILL)

    assert rt.run(on_step=on_step) == 0
    assert rt.close() == 1
    snap = rt.snapshot()
    n = snap["frames_processed"]
    assert n == len(_read_all(clip))
    assert rt.stats.error is not None and "killed by SIGKILL" in rt.stats.error
    out = snap["outputs"]["VideoSink"]
    assert out["written"] + out["dropped"] == n and out["dropped"] > 0


def test_auto_codec_is_mp4v_in_realtime_runs(manifest: Manifest, tmp_path: Path) -> None:
    """``output.video_codec = auto`` in a realtime run: MPEG-4 Part 2 (small files for long
    runs; the writer drops frames rather than slow the core), still ``annotated.mp4``; an
    explicit choice is kept."""
    clip = demo_segment(tmp_path / "clip.mp4", 100, 104, half=True)
    for choice, want in (("auto", "mp4v"), ("mjpeg", "mjpeg")):
        out = tmp_path / choice
        config = Config.model_validate({
            "models": {"dir": str(manifest.folder), "threads": 1}, "source": {"uri": str(clip)},
            "scheduler": {"mode": "realtime"},
            "output": {"dir": str(out), "jsonl": False, "video_codec": choice}})
        rt = Runtime(config)
        rt.open()
        rt.add_file_outputs(out)
        (video,) = [o for o in rt.outputs if isinstance(o, VideoProcessSink)]
        assert (video.codec, video.path.name, video.lossless) == (want, "annotated.mp4", False)
        assert rt.close() == 0


_SMALL_SHM = """
import sys
from pathlib import Path
import cv2
from edge.annotation import Annotation
from edge.sinks import SinkError
from edge.sinks.video_process import VideoProcessSink
from edge.types import Frame
cap = cv2.VideoCapture(sys.argv[1]); ok, image = cap.read(); cap.release()
sink = VideoProcessSink(Path(sys.argv[2]), 25.0, lossless=True)
for i in range(12):
    sink.write(Frame(image, i, i, i / 25), Annotation(i, i / 25, 0, {"frame_id": i, "persons": []}))
try:
    sink.close()
    print("ok", sink.slots, sink.written)
except SinkError as e:
    print("error", sink.written, e)
"""


@pytest.mark.parametrize("room", ["8m", "1m"])
def test_a_small_dev_shm_is_no_bus_error(tmp_path: Path, room: str) -> None:
    """/dev/shm with less room than the ring (a container's 64 MB and 4K frames; here 8 MB and
    1 MB against 8 slots of 5.3 MB), in a mount namespace of its own: the ring takes the slots
    that fit, or the writer fails with a message naming /dev/shm. The first frame past the
    room used to kill the process with SIGBUS (exit 135, an empty video)."""
    require("unshare", "apt-get install util-linux")
    path = tmp_path / "v.mp4"
    script = (f"mount -t tmpfs -o size={room} tmpfs /dev/shm && exec {sys.executable} -c "
              '"$0" "$1" "$2"')
    run = subprocess.run(["unshare", "-m", "sh", "-c", script, _SMALL_SHM, str(DEMO_CLIP),
                          str(path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"exit {run.returncode} (-7/135: SIGBUS)\n{run.stderr}"
    words = run.stdout.split()
    if room == "8m":
        assert words[:3] == ["ok", "1", "12"], run.stdout + run.stderr
        assert len(_read_all(path)) == 12
        assert "has room for 1 of 8 frame slots" in run.stderr
    else:
        assert words[:2] == ["error", "0"], run.stdout + run.stderr
        assert "no shared memory for one frame" in run.stdout and "/dev/shm" in run.stdout
