"""The annotated video written by a process of its own, fed through a shared-memory ring.

Drawing, encoding and muxing a 1768x994 frame take 7 ms of CPU (Motion JPEG, drawn in the ring's
slot) to 13 ms (mp4v), and in a thread their Python side shares the interpreter lock with the
core. Here a child process does all of
it: ``python -m edge.sinks.video_process``, a fresh interpreter started by :mod:`subprocess`
(the parent has inference and MQTT threads, which ``fork`` must not copy; ``multiprocessing``'s
``spawn`` would also re-import the parent's main script, edge.cli and its models' runtime: 0.5 s
and ~35 MB more). The core thread pays one copy of the frame into a slot of a
:class:`multiprocessing.shared_memory.SharedMemory` ring, a small pickle of what is drawn (ids,
boxes and 2D joints) into the same slot, and a message of a few bytes on a socket pair
(:class:`multiprocessing.connection.Connection`).

The ring (:func:`ring_slots`):

* ``slots`` slots of ``META_BYTES`` (the pickled drawing data) + the frame's pixels, page
  aligned; at most ``MAX_SLOTS`` and at most ``max_bytes`` in all (at least one slot): 8 slots
  (43 MB) for 1768x994, 2 for 4K (50 MB) under the default 64 MiB;
* a slot is the parent's until it sends ``("frame", slot, n)``, and the child's until it answers
  ``("free", slot)``, which it does once it has drawn on the slot's pixels and encoded them
  (drawing in the slot saves a copy of the frame);
* at most ``IN_FLIGHT`` slots are the child's at once; filled slots beyond are pending in the
  parent, where drop-oldest can still take them back (realtime runs): the oldest pending frame
  is overwritten by the newest and counted as dropped (when every slot is the child's, the new
  frame is dropped and counted). In every-frame runs (``lossless``) the core waits for a free
  slot instead, only when the ring is full.

The segment's name exists in ``/dev/shm`` only until the child has mapped it (then the parent
unlinks it; a parent killed before that leaves it to ``multiprocessing``'s resource tracker).

Faults: a child that dies (killed, out of memory), cannot open the file, finds the disk full, or
makes no progress for ``stall_s`` is logged once as an error; the frames it had and every later
one are counted as dropped, the core goes on, and :meth:`VideoProcessSink.close` raises the
:class:`~edge.sinks.base.SinkError` (the run's exit code 1). The child ignores SIGINT (Ctrl-C in a
terminal reaches the whole process group; the parent stops it cleanly) and treats SIGTERM
(``systemctl stop`` signals every process of the unit) as "finish within ``TERM_GRACE_S``": the
parent's stop, or its death (end of file on the pipe), ends it first, with the file finished.

Why by hand: the stdlib gives the shared memory, the process and the messages; no library offers
a drop-oldest ring of frame slots between two processes, and the protocol is a few lines. The
child maps the segment from ``/dev/shm`` itself (where ``SharedMemory`` puts it on Linux), since
``SharedMemory`` there would start a resource tracker of its own that "cleans up" the parent's
segment.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import mmap
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from types import FrameType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.annotation import Annotation
from edge.sinks.base import SinkError
from edge.sinks.video import VideoCodec, VideoSink, draw_annotation
from edge.types import Frame

logger = logging.getLogger(__name__)

#: Bytes a slot keeps for the pickled drawing data (32 people of 33 joints take ~40 kB).
META_BYTES = 64 << 10
#: Slots a ring has at most.
MAX_SLOTS = 8
#: Slots the child holds at most (one being drawn and encoded, one waiting); the rest stay
#: droppable.
IN_FLIGHT = 2
#: Seconds the child keeps working after a SIGTERM, waiting for the parent's stop.
TERM_GRACE_S = 5.0
#: The child reports a full disk below this many free bytes (FFmpeg's write errors are silent
#: through OpenCV); checked once a second.
DISK_MIN_FREE = 1 << 20

#: The child's stages whose CPU time (``time.process_time``, all its threads) it reports at the
#: end: the interpreter's start and imports until the ring is mapped and the file open; reading a
#: message and the drawing data; drawing; encoding and muxing; the free-space check; finishing
#: and verifying the file.
PROFILE_STAGES = ("start", "read", "draw", "encode", "disk", "finish")

_PAGE = 4096


def ring_slots(frame_bytes: int, max_bytes: int) -> tuple[int, int]:
    """The ring's geometry for frames of ``frame_bytes``.

    Args:
        frame_bytes: Pixels of one (H, W, 3) uint8 frame, bytes.
        max_bytes: Bound of the whole ring, bytes (at least one slot is always made).

    Returns:
        ``(slots, stride)``: the number of slots and the bytes of one (page aligned).
    """
    stride = -(-(META_BYTES + frame_bytes) // _PAGE) * _PAGE
    return max(1, min(MAX_SLOTS, max_bytes // stride)), stride


def _drawn_part(annotation: Annotation) -> dict[str, Any]:
    """What the drawing reads from an annotation (ids, boxes, 2D joints, frame id, timings)."""
    p = annotation.payload
    persons = [{"id": q["id"], "bbox": q["bbox"], "pose_2d": q["pose_2d"]}
               for q in p.get("persons", ())]
    return {"frame_id": annotation.frame_id, "ts": annotation.ts,
            "payload": {"frame_id": p.get("frame_id", annotation.frame_id), "persons": persons},
            "timings": annotation.timings}


#: Where Linux keeps POSIX shared memory (``SharedMemory`` segments are files there).
SHM_DIR = "/dev/shm"


def _reserved_shm(size: int) -> SharedMemory:
    """A new shared-memory segment of ``size`` bytes whose pages are all reserved now.

    tmpfs hands out a segment's pages only when they are first written, so a segment larger
    than the room left in ``/dev/shm`` is created without complaint and the first write past
    the room kills the process with SIGBUS (a run on the demo clip with an 8 MB ``/dev/shm``
    died so, "Bus error", exit 135, an empty video). ``posix_fallocate`` claims every page up
    front, or fails with ENOSPC here.

    Raises:
        OSError: The segment cannot be made or its pages reserved (nothing is left behind).
    """
    shm = SharedMemory(create=True, size=size)
    try:
        fd = os.open(os.path.join(SHM_DIR, shm.name.lstrip("/")), os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except OSError:
        shm.close()
        shm.unlink()
        raise
    return shm


class VideoProcessSink:
    """The annotated video, drawn and encoded by a child process (see the module docstring).

    Args:
        path: The video file (its folder is created; the file is created at once, so that an
            unwritable path is refused here).
        fps: Frame rate written in the file's header.
        codec: ``mp4v`` or ``mjpeg`` (see :class:`~edge.sinks.video.VideoSink`).
        lossless: Wait for a free slot instead of dropping the oldest pending frame.
        max_bytes: Bound of the ring, bytes.
        nice: Niceness added to the child (>= 1: it never outranks the core; capped at 19).
        name: For logs and the run's snapshot.
        stall_s: A child that takes no frame for this long while frames wait is given up.

    Raises:
        SinkError: The file cannot be created.
    """

    def __init__(self, path: Path, fps: float, codec: VideoCodec = "mp4v", *,
                 lossless: bool = True, max_bytes: int = 64 << 20, nice: int = 10,
                 name: str = "video", stall_s: float = 60.0) -> None:
        if codec not in ("mp4v", "mjpeg"):
            raise ValueError(f"video codec must be mp4v or mjpeg, got {codec!r}")
        if nice < 1:
            raise ValueError(f"nice must be >= 1 (the writer never outranks the core), got {nice}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.path = Path(path)
        self.fps, self.codec, self.lossless = fps, codec, lossless
        self.max_bytes, self.nice, self.name, self.stall_s = max_bytes, nice, name, stall_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb"):
                pass
        except OSError as e:
            raise SinkError(f"video {self.path}: cannot be written ({e})") from None
        #: Frames the child has drawn (at close: encoded into the finished file).
        self.written = 0
        #: Frames lost: dropped oldest-first (realtime), or lost with a failed child.
        self.dropped = 0
        #: Why the writer failed (logged once), or None.
        self.error: str | None = None
        #: The child's CPU time per stage, seconds, once it finished the file
        #: (:data:`PROFILE_STAGES`), or None.
        self.profile: dict[str, float] | None = None
        self.slots = 0
        self._shm: SharedMemory | None = None
        self._unlinked = False
        self._shape: tuple[int, ...] | None = None
        self._stride = 0
        self._free: collections.deque[int] = collections.deque()
        self._pending: collections.deque[tuple[int, int]] = collections.deque()  # slot, meta len
        self._in_flight = 0
        self._closed = False
        self._final: int | None = None
        self._warned_meta = False
        self._warned_size = False
        parent_sock, child_sock = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "edge.sinks.video_process", str(child_sock.fileno()),
                 str(self.path), repr(float(fps)), codec, str(nice)],
                pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL, env=env)
        except OSError as e:
            parent_sock.close()
            raise SinkError(f"video {self.path}: cannot start the writer process ({e})") from None
        finally:
            child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._progress_t = time.monotonic()
        # A sink never closed (an exception past the caller) still finishes its file at exit.
        atexit.register(self._at_exit)

    @property
    def pid(self) -> int:
        """The writer process's id."""
        return self._proc.pid

    # ------------------------------------------------------------------ core thread

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Copies the frame into a slot and tells the child (see the module docstring).

        Never raises for the child's faults (they are logged, counted and raised by
        :meth:`close`).

        Raises:
            SinkError: The sink is closed.
        """
        if self._closed:
            raise SinkError(f"video {self.path}: closed")
        if self.error is not None:
            self.dropped += 1
            return
        image = frame.image
        if self._shape is None:
            self._make_ring(image.shape)
        elif image.shape != self._shape:
            # A live camera that comes back at another size (reconfigured, or another device
            # on the same index): its frames are scaled to the video's size, which cannot
            # change mid-file. This used to end the video ("the rest of the run is not
            # recorded"). The drawing is in normalised coordinates, so it still fits.
            h, w = self._shape[:2]
            if not self._warned_size:
                self._warned_size = True
                logger.warning("video %s: frames of %dx%d now, the video is %dx%d; they are "
                               "scaled to it", self.path, image.shape[1], image.shape[0], w, h)
            image = np.asarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA),
                               np.uint8)
        if self.error is not None:
            self.dropped += 1
            return
        self._pump()
        if not self._free:
            if self.lossless:
                self._wait(lambda: bool(self._free))
            elif self._pending:
                self._free.append(self._pending.popleft()[0])
                self.dropped += 1
        if self.error is not None or not self._free:
            self.dropped += 1  # failed, or every slot is the child's (realtime)
            return
        slot = self._free.popleft()
        meta = self._put(slot, image, annotation)
        self._pending.append((slot, meta))
        self._forward()

    def _make_ring(self, shape: tuple[int, ...]) -> None:
        nbytes = int(np.prod(shape))
        slots, self._stride = ring_slots(nbytes, self.max_bytes)
        error: OSError | None = None
        for n in range(slots, 0, -1):  # fewer slots when /dev/shm is small (a container's 64 MB)
            try:
                self._shm = _reserved_shm(n * self._stride)
            except OSError as e:
                error = e
                continue
            self.slots = n
            break
        if self._shm is None:
            free = shutil.disk_usage(SHM_DIR).free if os.path.isdir(SHM_DIR) else 0
            self._fail(f"no shared memory for one frame of {self._stride} bytes in {SHM_DIR} "
                       f"({free} bytes free: {error}); give /dev/shm more room (Docker: "
                       "--shm-size) or set output.video = false")
            return
        if self.slots < slots:
            logger.warning("video %s: %s has room for %d of %d frame slots; the writer keeps "
                           "%d frame(s) in hand", self.path, SHM_DIR, self.slots, slots, self.slots)
        self._shape = tuple(shape)
        self._free.extend(range(self.slots))
        self._send(("ring", self._shm.name, self._shape, self.slots, self._stride))

    def _put(self, slot: int, image: npt.NDArray[np.uint8], annotation: Annotation) -> int:
        """Copies pixels and drawing data into ``slot``; returns the data's length."""
        assert self._shm is not None
        base = slot * self._stride
        view: npt.NDArray[np.uint8] = np.ndarray(image.shape, np.uint8, self._shm.buf,
                                                 base + META_BYTES)
        np.copyto(view, image)
        part = _drawn_part(annotation)
        meta = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
        while len(meta) > META_BYTES and part["payload"]["persons"]:
            part["payload"]["persons"].pop()  # cannot happen with max_persons <= 32
            meta = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
            if not self._warned_meta:
                self._warned_meta = True
                logger.warning("video %s: too many people to draw; some are left out", self.path)
        buf = self._shm.buf
        assert buf is not None
        buf[base:base + len(meta)] = meta
        return len(meta)

    def _forward(self) -> None:
        """Hands pending slots to the child, oldest first, up to ``IN_FLIGHT``."""
        while self._pending and self._in_flight < IN_FLIGHT and self.error is None:
            slot, meta = self._pending.popleft()
            self._in_flight += 1
            self._send(("frame", slot, meta))

    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            self._conn.send(msg)
        except (OSError, ValueError) as e:
            self._fail(f"the pipe to it broke ({e})")

    def _pump(self) -> None:
        """Reads what the child said, without waiting (nothing after its last word)."""
        while self.error is None and self._final is None:
            try:
                if not self._conn.poll(0):
                    break
                msg = self._conn.recv()
            except (EOFError, OSError):
                self._fail(self._exit_reason())
                break
            self._handle(msg)
        self._forward()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        self._progress_t = time.monotonic()
        if kind == "attached":
            self._unlink()
        elif kind == "free":
            self._free.append(int(msg[1]))
            self._in_flight -= 1
            self.written += 1
        elif kind == "closed":
            self._final = int(msg[1])
            self.profile = dict(msg[2]) if len(msg) > 2 else None
            if not self._closed:  # not asked to: a SIGTERM's grace ran out
                self._fail(f"it finished the file by itself after {self._final} frames")
        elif kind == "error":
            self._fail(str(msg[1]))

    def _wait(self, done: Any, timeout: float | None = None) -> None:
        """Reads the child's messages until ``done()``, a failure, a stall or ``timeout``."""
        end = None if timeout is None else time.monotonic() + timeout
        self._progress_t = time.monotonic()
        while not done() and self.error is None:
            try:
                ready = self._conn.poll(0.2)
            except (EOFError, OSError):
                ready = True
            if ready:
                self._pump()
            elif self._proc.poll() is not None:
                self._pump()
                self._fail(self._exit_reason())
            elif time.monotonic() - self._progress_t > self.stall_s:
                self._fail(f"no progress for {self.stall_s:.0f} s")
            elif end is not None and time.monotonic() > end:
                self._fail(f"not finished after {timeout:.0f} s")

    def _exit_reason(self) -> str:
        try:
            code = self._proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        if code < 0:
            return f"the process was killed by {signal.Signals(-code).name}"
        return f"the process exited with code {code}"

    def _fail(self, why: str) -> None:
        """Gives the writer up: logged once, its frames counted as dropped, the child ended."""
        if self.error is not None:
            return
        self.error = f"video {self.path}: the writer process failed: {why}"
        lost = self._in_flight + len(self._pending)
        self.dropped += lost
        self._in_flight = 0
        self._pending.clear()
        logger.error("%s; %d queued frames lost, the rest of the run is not recorded",
                     self.error, lost)
        self._end_child(0.0)

    def _end_child(self, timeout: float) -> None:
        """Waits ``timeout`` s for the child to exit, then kills it; frees the ring."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5.0)
        self._conn.close()
        self._unlink()
        if self._shm is not None:
            self._shm.close()
            self._shm = None

    def _unlink(self) -> None:
        if self._shm is not None and not self._unlinked:
            self._unlinked = True
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()

    # ------------------------------------------------------------------ stop

    def close(self) -> None:
        """Hands over every pending frame, lets the child finish the file, ends it.

        Safe to call twice.

        Raises:
            SinkError: The writer failed during the run or while finishing the file.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        if self.error is None:
            self._wait(lambda: not self._pending)
        if self.error is None:
            self._send(("stop",))
            self._wait(lambda: self._final is not None, timeout=self.stall_s)
        if self.error is None:
            assert self._final is not None
            self.written = self._final
            self._end_child(10.0)
            if self._proc.returncode != 0:
                self._fail(self._exit_reason())
        if self.error is not None:
            raise SinkError(self.error)

    def _at_exit(self) -> None:
        with contextlib.suppress(SinkError):  # logged
            self.close()


# ---------------------------------------------------------------------- child process


def _child_main(conn: Connection, path: str, fps: float, codec: VideoCodec, nice: int) -> None:
    """The writer process: draws and encodes the frames the parent announces, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    termed: list[float] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        termed.append(time.monotonic())

    signal.signal(signal.SIGTERM, on_term)
    try:
        os.nice(nice)
    except OSError as e:
        logger.debug("writer priority unchanged (%s)", e)
    cv2.setNumThreads(1)
    code = 0
    try:
        code = _child_loop(conn, VideoSink(Path(path), fps, codec), termed)
    except BaseException as e:  # reported to the parent, which logs it
        code = 1
        text = str(e) if isinstance(e, SinkError) else f"{type(e).__name__}: {e}"
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", text))
    os._exit(code)  # the file is finished or reported; no interpreter teardown needed


def _child_loop(conn: Connection, sink: VideoSink, termed: list[float]) -> int:
    shm: mmap.mmap | None = None
    shape: tuple[int, ...] = ()
    stride = 0
    next_disk_check = 0.0
    cpu = dict.fromkeys(PROFILE_STAGES, 0.0)
    clock = time.process_time
    try:
        while not termed or time.monotonic() - termed[0] < TERM_GRACE_S:
            if not conn.poll(0.5):
                continue
            t0 = clock()
            try:
                msg = conn.recv()
            except EOFError:
                break  # the parent is gone: finish the file
            if msg[0] == "ring":
                _, name, shape, slots, stride = msg
                fd = os.open(f"/dev/shm/{name.lstrip('/')}", os.O_RDWR)
                try:
                    shm = mmap.mmap(fd, slots * stride)
                finally:
                    os.close(fd)
                conn.send(("attached",))
                sink.open(int(shape[1]), int(shape[0]))
                cpu["start"] = clock()
            elif msg[0] == "frame":
                assert shm is not None
                slot, n = int(msg[1]), int(msg[2])
                base = slot * stride
                part = pickle.loads(shm[base:base + n])
                image: npt.NDArray[np.uint8] = np.ndarray(shape, np.uint8, shm,
                                                          base + META_BYTES)
                ann = Annotation(part["frame_id"], part["ts"], len(part["payload"]["persons"]),
                                 part["payload"], part["timings"])
                t1 = clock()
                # Drawn in the slot itself (no copy of the frame), which is freed once encoded.
                drawn = draw_annotation(image, ann, inplace=True)
                t2 = clock()
                sink.append(drawn)
                del drawn, image
                conn.send(("free", slot))
                t3 = clock()
                cpu["read"] += t1 - t0
                cpu["draw"] += t2 - t1
                cpu["encode"] += t3 - t2
                now = time.monotonic()
                if now >= next_disk_check:
                    next_disk_check = now + 1.0
                    free = shutil.disk_usage(sink.path.parent).free
                    if free < DISK_MIN_FREE:
                        raise SinkError(f"video {sink.path}: no space left on the device "
                                        f"({free} bytes free)")
                    cpu["disk"] += clock() - t3
            elif msg[0] == "stop":
                break
        t0 = clock()
        frames = sink.frames
        sink.close()
        _verify(sink.path, frames)
        cpu["finish"] = clock() - t0
        conn.send(("closed", frames, cpu))
        return 0
    finally:
        if shm is not None:
            shm.close()


def _verify(path: Path, frames: int) -> None:
    """Checks that the finished file reads back with ``frames`` frames.

    A full disk is silent in OpenCV's writer.
    """
    if frames == 0:
        return
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    if n != frames:
        raise SinkError(f"video {path}: the finished file holds {n} of {frames} frames "
                        "(disk full?)")


if __name__ == "__main__":
    _child_main(Connection(int(sys.argv[1])), sys.argv[2], float(sys.argv[3]),
                "mjpeg" if sys.argv[4] == "mjpeg" else "mp4v", int(sys.argv[5]))
