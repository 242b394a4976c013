"""QueuedSink with real sinks and real stuck or failing files: order kept when lossless, the
oldest frames dropped (and counted) when lossy, the core never waits on a stuck consumer, and a
sink's failure surfaces on the core thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.annotation import Annotation
from edge.sinks import JsonlSink, SinkError, VideoSink
from edge.sinks.queued import QueuedSink
from edge.sinks.video import VideoCodec
from edge.types import U8, Frame


def _item(i: int) -> tuple[Frame, Annotation]:
    frame = Frame(np.zeros((4, 4, 3), np.uint8), i, i * 1000, i / 30)
    payload = {"frame_id": i, "pad": "x" * 2000}  # 2 kB a line: a pipe fills in ~30 lines
    return frame, Annotation(i, i / 30, 0, payload)


def test_lossless_keeps_every_frame_in_order(tmp_path: Path) -> None:
    q = QueuedSink(JsonlSink(tmp_path / "a.jsonl"), maxsize=2, lossless=True, name="jsonl")
    for i in range(200):
        q.write(*_item(i))
    q.close()
    ids = [json.loads(line)["frame_id"] for line in (tmp_path / "a.jsonl").read_text().split()]
    assert ids == list(range(200)) and q.dropped == 0 and q.written == 200
    assert q.path == tmp_path / "a.jsonl"


def test_lossy_never_waits_on_a_stuck_consumer_and_drops_the_oldest(tmp_path: Path) -> None:
    """The sink writes into a FIFO whose reader never reads: the pipe fills and the sink's
    thread blocks for good, as on a hung network share. The core's writes still return."""
    fifo = tmp_path / "stuck.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read
    try:
        q = QueuedSink(JsonlSink(fifo), maxsize=4, lossless=False, name="stuck")
        done = threading.Event()

        def core() -> None:
            for i in range(500):
                q.write(*_item(i))
            done.set()

        t = threading.Thread(target=core, daemon=True)
        t.start()
        assert done.wait(60), "the core's writes blocked on a stuck sink"
        assert q.dropped >= 400  # the pipe holds a few dozen lines; the queue 4 frames
        assert q.written < 100
        os.set_blocking(reader, True)
        chunks: list[bytes] = []

        def drain() -> None:  # unstick it: read until the sink closes its end
            while chunk := os.read(reader, 1 << 20):
                chunks.append(chunk)

        d = threading.Thread(target=drain, daemon=True)
        d.start()
        q.close()
        d.join(30)
        lines = [json.loads(x)["frame_id"] for x in b"".join(chunks).decode().split()]
        assert lines == sorted(lines) and lines[-1] == 499  # the newest frame made it
    finally:
        os.close(reader)


def test_a_failing_sink_surfaces_on_the_next_write_or_close(tmp_path: Path) -> None:
    """/dev/full: every write fails with ENOSPC, as a full SD card does."""
    q = QueuedSink(JsonlSink(Path("/dev/full")), maxsize=4, lossless=True, name="full")
    q.write(*_item(0))
    q.flush(timeout=10)
    with pytest.raises(SinkError, match="No space left"):
        for i in range(1, 10):
            q.write(*_item(i))
    q2 = QueuedSink(JsonlSink(Path("/dev/full")), maxsize=4, lossless=False, name="full2")
    q2.write(*_item(0))
    with pytest.raises(SinkError):
        q2.close()


_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import numpy as np
from edge.annotation import Annotation
from edge.sinks import JsonlSink, SinkError
from edge.types import Frame
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, as ENOSPC on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
sink = JsonlSink(Path(sys.argv[1]))
try:
    for i in range(1000):
        sink.write(Frame(np.zeros((4, 4, 3), np.uint8), i, i, i / 30),
                   Annotation(i, i / 30, 0, {"frame_id": i, "pad": "x" * 2000}))
except SinkError as e:
    print(sink.lines, e)
"""


def test_a_full_disk_leaves_whole_lines(tmp_path: Path) -> None:
    """A write refused part-way (the file-size limit: the kernel takes what fits, then refuses,
    as a full disk does) is cut back to the last whole line: the file stays valid JSON Lines.
    It used to end in half a line."""
    path = tmp_path / "a.jsonl"
    run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path), "30000"],
                         capture_output=True, text=True, timeout=60, check=True)
    lines, message = run.stdout.split(" ", 1)
    assert "write failed" in message and "keeps its" in message, run.stdout + run.stderr
    text = path.read_text()
    assert text.endswith("\n")
    ids = [json.loads(line)["frame_id"] for line in text.splitlines()]
    assert ids == list(range(int(lines))) and len(ids) == 30000 // 2027


_FULL_DISK_COCO = """
import resource, signal, sys
from pathlib import Path
import numpy as np
from edge.annotation import Annotation
from edge.sinks import CocoKeypointsSink, SinkError
from edge.types import Frame
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))
sink = CocoKeypointsSink(Path(sys.argv[1]))
for i in range(1000):
    sink.write(Frame(np.zeros((4, 4, 3), np.uint8), i, i, float(i), name=f"img{i}.jpg"),
               Annotation(i, float(i), 0, {"frame_id": i, "image": {"width": 4, "height": 4},
                                           "persons": []}))
try:
    sink.close()
except SinkError as e:
    print(e)
"""


def test_coco_results_on_a_full_disk_leave_no_temporary_file(tmp_path: Path) -> None:
    """The results are written whole through a temporary file; on a full disk that file used
    to stay behind (coco_keypoints.json.tmp, cut at the limit)."""
    path = tmp_path / "coco_keypoints.json"
    run = subprocess.run([sys.executable, "-c", _FULL_DISK_COCO, str(path)],
                         capture_output=True, text=True, timeout=60, check=True)
    assert "write failed" in run.stdout, run.stdout + run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_closed_sink_refuses_writes(tmp_path: Path) -> None:
    q = QueuedSink(JsonlSink(tmp_path / "b.jsonl"), name="b")
    q.close()
    q.close()  # twice is fine
    with pytest.raises(SinkError, match="closed"):
        q.write(*_item(0))
    with pytest.raises(ValueError, match="maxsize"):
        QueuedSink(JsonlSink(tmp_path / "c.jsonl"), maxsize=0)


def test_byte_bound_and_a_nicer_thread(tmp_path: Path) -> None:
    """``max_bytes`` bounds the queued pixels whatever ``maxsize`` says; ``nice`` lowers the
    sender thread only (read back from the kernel by that thread's id)."""
    frame_bytes = _item(0)[0].image.nbytes  # 48
    gate = threading.Event()

    class Gated(JsonlSink):
        """A real JSONL file whose writes wait for ``gate`` (a consumer that is not ready)."""

        def write(self, frame: Frame, annotation: Annotation) -> None:
            gate.wait(30)
            super().write(frame, annotation)

    q = QueuedSink(Gated(tmp_path / "n.jsonl"), maxsize=100, max_bytes=3 * frame_bytes,
                   nice=5, name="nice")
    base = os.nice(0)
    for i in range(20):
        q.write(*_item(i))
    assert len(q._items) <= 3 and q.dropped >= 16  # 1 in the sender's hands, 3 queued
    gate.set()
    q.close()
    ids = [json.loads(x)["frame_id"] for x in (tmp_path / "n.jsonl").read_text().split()]
    assert ids[-3:] == [17, 18, 19] and q.written + q.dropped == 20
    assert q.niceness == min(19, base + 5) and os.nice(0) == base  # the core's is unchanged
    with pytest.raises(ValueError, match="nice"):
        QueuedSink(JsonlSink(tmp_path / "d.jsonl"), nice=-1)
    with pytest.raises(ValueError, match="max_bytes"):
        QueuedSink(JsonlSink(tmp_path / "e.jsonl"), max_bytes=0)


@pytest.mark.parametrize("codec", ["mp4v", "mjpeg"])
def test_queued_video_writes_every_frame_at_the_source_size(tmp_path: Path, codec: VideoCodec,
                                                            demo_frames: dict[int, U8]) -> None:
    """Lossless (every-frame) video through the queue: every frame in the file, read back by
    OpenCV at the source's size, skeleton pixels drawn where the annotation's person is."""
    image = demo_frames[120]
    h, w = image.shape[:2]
    person = {"id": 1, "bbox": {"x1": 0.4, "y1": 0.2, "x2": 0.6, "y2": 0.8},
              "pose_2d": {"left_shoulder": {"x": 0.45, "y": 0.3},
                          "left_hip": {"x": 0.45, "y": 0.6}}}
    path = tmp_path / f"v.{'avi' if codec == 'mjpeg' else 'mp4'}"
    q = QueuedSink(VideoSink(path, 25.0, codec), maxsize=2, lossless=True, name="video")
    n = 12
    for i in range(n):
        payload = {"frame_id": i, "persons": [person]}
        q.write(Frame(image, i, i * 40_000_000, i / 25), Annotation(i, i / 25, 1, payload))
    q.close()
    cap = cv2.VideoCapture(str(path))
    got = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        got.append(frame)
    cap.release()
    assert len(got) == n and q.written == n and q.dropped == 0
    assert got[0].shape == (h, w, 3)
    # The bone from shoulder to hip: drawn pixels differ from the source along it.
    x, y0, y1 = round(0.45 * w), round(0.3 * h), round(0.6 * h)
    diff = np.abs(got[-1][y0:y1, x - 1:x + 2].astype(int) - image[y0:y1, x - 1:x + 2]).mean()
    assert diff > 20, f"no skeleton drawn ({diff:.1f})"
    with pytest.raises(ValueError, match="codec"):
        VideoSink(tmp_path / "x.mp4", 25.0, "h264")  # type: ignore[arg-type]
