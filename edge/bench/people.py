"""Frames with a controlled number of real people, and a source that delivers them on time.

A benchmark of "fps at 1, 2, 4, 6 people" needs frames in which exactly that many people are
seen. :func:`extract_person_clips` follows one person at a time through real clips (the bundled
Sports2D demo by default): the detector runs on every ``step``-th frame, the best detection's
body region is interpolated in between, and a square window around it is cut out (an affine
warp, as the landmark stage does) into a tile. Runs where the detection jumps (another person)
or vanishes for long are split; short runs are dropped. :class:`ComposedFrames` lays ``n`` tiles
out in a near-square grid, each tile a different person clip or the same clip at another time
(played forwards and backwards, every other repeat mirrored), so the people move like people and
no two tiles are identical. :class:`PacedSource` delivers such frames at a fixed rate and stamps
each with ``time.monotonic_ns()`` at its capture instant, so capture-to-annotation latency can be
measured through the real scheduler.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.sources.base import SourceEnd, SourceError
from edge.types import U8, Frame

logger = logging.getLogger(__name__)

#: Region (n, 5) of the best detection in a frame, or None: what the extractor needs from a
#: detector (``edge.detect.PoseDetector`` wrapped so that tests can substitute anything).
FindPerson = Callable[[U8], npt.NDArray[np.float32] | None]


@dataclass(frozen=True)
class PersonClip:
    """Square tiles following one person through part of a clip.

    Attributes:
        source: The clip's path.
        first_frame: Index in the clip of the first tile.
        tiles: (T, S, S, 3) uint8 BGR, one tile per clip frame.
    """

    source: str
    first_frame: int
    tiles: U8

    def __post_init__(self) -> None:
        if self.tiles.ndim != 4 or self.tiles.shape[1] != self.tiles.shape[2] \
                or self.tiles.shape[3] != 3 or self.tiles.dtype != np.uint8:
            raise ValueError(f"tiles must be (T, S, S, 3) uint8, got {self.tiles.shape} "
                             f"{self.tiles.dtype}")
        if self.tiles.shape[0] < 2:
            raise ValueError("a person clip needs at least 2 frames")

    def __len__(self) -> int:
        return int(self.tiles.shape[0])


def _read_frames(path: Path) -> tuple[cv2.VideoCapture, int]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"video {path}: cannot be opened (not a video, or corrupt)")
    return cap, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))


def _segments(found: dict[int, npt.NDArray[np.float32]], max_gap: int,
              max_jump: float) -> list[list[int]]:
    """Splits the frames with a detection into runs of one person (no long gap, no jump)."""
    runs: list[list[int]] = []
    for i in sorted(found):
        r = found[i]
        if runs:
            j = runs[-1][-1]
            p = found[j]
            jump = float(np.hypot(*(r[:2] - p[:2]))) / max(float(p[2]), 1.0)
            if i - j <= max_gap and jump <= max_jump:
                runs[-1].append(i)
                continue
        runs.append([i])
    return runs


def extract_person_clips(path: Path, find_person: FindPerson, *, tile: int = 320,
                         step: int = 3, window_scale: float = 0.85, min_frames: int = 24,
                         max_frames: int | None = None) -> list[PersonClip]:
    """Follows single people through a clip and cuts square tiles around them.

    Args:
        path: A video file.
        find_person: Body region ``(cx, cy, w, h, rotation)`` px of the best detection in a
            frame, or None.
        tile: Side of the output tiles, px.
        step: Run ``find_person`` on every ``step``-th frame and interpolate between.
        window_scale: Window side as a fraction of the region's size (the region is 1.25x
            the body's extent).
        min_frames: Shorter runs are dropped.
        max_frames: Read at most this many frames of the clip.

    Returns:
        The person clips found, longest first (possibly none).

    Raises:
        SourceError: When the file cannot be read.
        ValueError: On nonsensical arguments.
    """
    if tile < 32 or step < 1 or window_scale <= 0 or min_frames < 2:
        raise ValueError("tile >= 32, step >= 1, window_scale > 0 and min_frames >= 2 needed")
    cap, count = _read_frames(path)
    found: dict[int, npt.NDArray[np.float32]] = {}
    n = 0
    try:
        while max_frames is None or n < max_frames:
            ok, image = cap.read()
            if not ok:
                break
            if n % step == 0:
                region = find_person(np.ascontiguousarray(image))
                if region is not None:
                    found[n] = np.asarray(region, np.float32)
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise SourceError(f"video {path}: no frame could be read")
    runs = [r for r in _segments(found, max_gap=4 * step, max_jump=0.5)
            if r[-1] - r[0] + 1 >= min_frames]
    if not runs:
        return []
    # Per-frame window (cx, cy, side) interpolated and smoothed over each run.
    windows: dict[int, tuple[int, npt.NDArray[np.float64]]] = {}
    for k, run in enumerate(runs):
        idx = np.arange(run[0], run[-1] + 1)
        keys = np.array(run)
        vals = np.stack([found[i][:3] for i in run]).astype(np.float64)
        interp = np.stack([np.interp(idx, keys, vals[:, c]) for c in range(3)], axis=1)
        kernel = np.ones(5) / 5.0
        padded = np.pad(interp, ((2, 2), (0, 0)), mode="edge")
        smooth = np.stack([np.convolve(padded[:, c], kernel, "valid") for c in range(3)], 1)
        for i, w in zip(idx.tolist(), smooth, strict=True):
            windows[int(i)] = (k, w)
    tiles: list[list[U8]] = [[] for _ in runs]
    cap, _ = _read_frames(path)
    try:
        for i in range(max(windows) + 1):
            ok, image = cap.read()
            if not ok:
                raise SourceError(f"video {path}: frame {i} of {count} could not be read again")
            if i not in windows:
                continue
            k, (cx, cy, size) = windows[i]
            side = max(float(size) * window_scale, 8.0)
            s = tile / side
            m = np.array([[s, 0.0, tile / 2 - s * cx], [0.0, s, tile / 2 - s * cy]])
            tiles[k].append(np.asarray(cv2.warpAffine(image, m, (tile, tile), flags=cv2.INTER_AREA,
                                           borderMode=cv2.BORDER_REPLICATE), np.uint8))
    finally:
        cap.release()
    clips = [PersonClip(str(path), run[0], np.stack(t)) for run, t in zip(runs, tiles,
                                                                          strict=True)]
    clips.sort(key=len, reverse=True)
    logger.info("%s: %d person clip(s) of %s frames", path, len(clips),
                [len(c) for c in clips])
    return clips


def grid_shape(people: int) -> tuple[int, int]:
    """Rows and columns of the near-square grid holding ``people`` tiles (>= 1)."""
    if people < 1:
        raise ValueError(f"people must be >= 1, got {people}")
    cols = math.ceil(math.sqrt(people))
    return math.ceil(people / cols), cols


class ComposedFrames:
    """Frames of ``people`` real people, one per cell of a grid.

    By default the tiles are laid edge to edge at their own size (people about as large as in
    the clips). With ``canvas`` (the "small people" variant) the frame has that size, a plain
    grey background, and every tile is shrunk to ``tile_px`` and centred in its grid cell with a
    fixed jitter, so that the people are small and scattered as a camera far away sees them.

    Args:
        clips: Person clips (same tile size); tile k shows clip ``k % len(clips)``.
        people: Number of tiles (people) per frame.
        canvas: ``(width, height)`` px of the frame for small people; None: the grid of tiles.
        tile_px: Side of a shrunk tile, px (with ``canvas``); the person in it is about 0.7 of it.
    """

    def __init__(self, clips: Sequence[PersonClip], people: int,
                 canvas: tuple[int, int] | None = None, tile_px: int | None = None) -> None:
        if not clips:
            raise ValueError("no person clips to compose from")
        sizes = {c.tiles.shape[1] for c in clips}
        if len(sizes) != 1:
            raise ValueError(f"person clips have different tile sizes {sorted(sizes)}")
        self.clips = list(clips)
        self.people = people
        self.rows, self.cols = grid_shape(people)
        self.tile = sizes.pop()
        self.small = canvas is not None
        if canvas is None:
            self.shape = (self.rows * self.tile, self.cols * self.tile, 3)
            self.cell_origin = [(r * self.tile, c * self.tile) for r in range(self.rows)
                                for c in range(self.cols)][:people]
            self.out_tile = self.tile
        else:
            w, h = canvas
            self.out_tile = tile_px if tile_px is not None else max(16, h // 8)
            if not 16 <= self.out_tile <= min(w // self.cols, h // self.rows):
                raise ValueError(f"tile_px {self.out_tile} does not fit {people} people in "
                                 f"{w}x{h}")
            self.shape = (h, w, 3)
            cw, ch = w // self.cols, h // self.rows
            rng = np.random.default_rng(people)  # a fixed layout per people count
            self.cell_origin = []
            for k in range(people):
                r, c = divmod(k, self.cols)
                jx, jy = rng.uniform(0.15, 0.85, 2)
                self.cell_origin.append((r * ch + round((ch - self.out_tile) * jy),
                                         c * cw + round((cw - self.out_tile) * jx)))
        # Tiles of one clip start at staggered times so that no two are alike.
        self._offsets = []
        for k in range(people):
            clip = self.clips[k % len(self.clips)]
            repeat = k // len(self.clips)
            share = math.ceil(people / len(self.clips))
            self._offsets.append((clip, repeat % 2 == 1, (repeat * (2 * len(clip) - 2)) // share))

    def image(self, index: int) -> U8:
        """The composed BGR frame number ``index`` (any int; clips play back and forth)."""
        canvas = np.full(self.shape, 114 if self.small else 0, np.uint8)
        s = self.out_tile
        for k, (clip, mirror, offset) in enumerate(self._offsets):
            period = 2 * len(clip) - 2
            j = (index + offset) % period
            j = j if j < len(clip) else period - j
            t = clip.tiles[j]
            if self.small:
                t = cv2.resize(t, (s, s), interpolation=cv2.INTER_AREA)
            y, x = self.cell_origin[k]
            canvas[y:y + s, x:x + s] = t[:, ::-1] if mirror else t
        return canvas


class PacedSource:
    """A live-like source: composed frames at a fixed rate, stamped at capture.

    ``read`` waits for the next frame's due time (as a camera would), stamps it with
    ``time.monotonic_ns()`` and composes it. Frames are due on a fixed grid from the first
    read; a reader that falls behind gets the frames late rather than skipped, and the delay is
    part of the measured latency.

    Args:
        frames: What to show.
        fps: Frames per second.
        n_frames: Frames before :class:`SourceEnd` (None: endless).
        stop: Ends the source early when set.
    """

    live = True

    def __init__(self, frames: ComposedFrames, fps: float, n_frames: int | None = None,
                 stop: threading.Event | None = None) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.frames = frames
        self.fps: float | None = fps
        self._period = 1.0 / fps
        self.frame_count: int | None = n_frames
        self.name = f"composed:{frames.people}-people@{fps:g}fps"
        self._stop = stop if stop is not None else threading.Event()
        self._next = 0
        self._t0: float | None = None

    @property
    def dropped(self) -> int:
        """Frames are never dropped here (the scheduler counts the ones it skips)."""
        return 0

    def read(self, timeout: float | None = None) -> Frame:
        """The next frame, at its due time.

        Raises:
            SourceEnd: After ``n_frames`` frames, or when ``stop`` is set.
        """
        if self.frame_count is not None and self._next >= self.frame_count:
            raise SourceEnd(self.name)
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._next * self._period
        if due > now and self._stop.wait(due - now):
            raise SourceEnd(self.name)
        t_ns = time.monotonic_ns()
        image = self.frames.image(self._next)
        frame = Frame(image, self._next, t_ns, time.time())
        self._next += 1
        return frame

    def close(self) -> None:
        """Nothing to release."""
