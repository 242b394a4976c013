"""QueuedSink with real sinks and real stuck or failing files: order kept when lossless, the
oldest frames dropped (and counted) when lossy, the core never waits on a stuck consumer, and a
sink's failure surfaces on the core thread."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.annotation import Annotation
from edge.sinks import JsonlSink, SinkError
from edge.sinks.queued import QueuedSink
from edge.types import Frame


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


def test_closed_sink_refuses_writes(tmp_path: Path) -> None:
    q = QueuedSink(JsonlSink(tmp_path / "b.jsonl"), name="b")
    q.close()
    q.close()  # twice is fine
    with pytest.raises(SinkError, match="closed"):
        q.write(*_item(0))
    with pytest.raises(ValueError, match="maxsize"):
        QueuedSink(JsonlSink(tmp_path / "c.jsonl"), maxsize=0)
