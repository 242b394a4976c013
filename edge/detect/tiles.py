"""A frame detector run on the whole frame and on overlapping tiles in rotation.

A one-pass detector sees the whole frame shrunk to its input (BlazePose: 224 px), so a person
much smaller than a quarter of the frame height is below what it can resolve. Running it on
square tiles of the frame as well magnifies them: a 288-px tile is shrunk only to 224/288. A full
sweep costs one call per tile, so a live detector run takes the whole frame plus ``per_run``
tiles in rotation: every part of the frame is looked at within ``ceil(n_tiles / per_run)`` runs
(the *revisit* time, reported by :attr:`TiledDetector.revisit_runs`), and the cost of one run is
bounded whatever the scene. Still images take every tile at once (``per_run = 0``).

Detections from overlapping tiles and the whole frame are merged by hard non-maximum
suppression on the detector's boxes (the best-scoring one of an overlapping group is kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.detect.blazepose import iou, validate_image
from edge.types import U8, Detections

__all__ = ["TileConfig", "TiledDetector", "merge_detections", "tile_grid"]


@dataclass(frozen=True)
class TileConfig:
    """How the frame is tiled.

    Attributes:
        tile_px: Side of a square tile, frame px. Frames no larger than this in both directions
            are not tiled.
        overlap: Fraction of a tile's side shared with its neighbour, in [0, 0.9]; it should
            exceed the size of what the detector boxes (BlazePose: a face) at the smallest
            person wanted, so that someone on a seam is whole in one tile.
        per_run: Tiles per call besides the whole frame, in rotation; 0 takes every tile on
            every call (still images).
        whole_frame: Also run on the whole frame each call (people larger than a tile).
        nms_iou: Detections overlapping a better one by IoU above this are dropped.
        max_region: A tile's detection whose body region is wider than this many tile sides is
            dropped: such a person is larger than the tile, only partly in it (the detector then
            guesses the body from a fragment), and is the whole-frame pass's to find.
    """

    tile_px: int = 288
    overlap: float = 0.25
    per_run: int = 3
    whole_frame: bool = True
    nms_iou: float = 0.3
    max_region: float = 100.0

    def __post_init__(self) -> None:
        if self.tile_px < 32:
            raise ValueError(f"TileConfig.tile_px must be >= 32, got {self.tile_px}")
        if not 0.0 <= self.overlap <= 0.9:
            raise ValueError(f"TileConfig.overlap must be in [0, 0.9], got {self.overlap}")
        if self.per_run < 0:
            raise ValueError(f"TileConfig.per_run must be >= 0, got {self.per_run}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"TileConfig.nms_iou must be in [0, 1], got {self.nms_iou}")
        if self.max_region <= 0.0:
            raise ValueError(f"TileConfig.max_region must be > 0, got {self.max_region}")


def _starts(length: int, side: int, overlap: float) -> list[int]:
    """Evenly spread tile origins along one axis: first at 0, last flush with the end."""
    if length <= side:
        return [0]
    step = side * (1.0 - overlap)
    n = max(2, math.ceil((length - side) / step) + 1)
    return [round(i * (length - side) / (n - 1)) for i in range(n)]


def tile_grid(width: int, height: int, config: TileConfig) -> npt.NDArray[np.int64]:
    """The tiles of a ``width`` x ``height`` frame.

    Args:
        width: Frame width, px.
        height: Frame height, px.
        config: Tile size and overlap.

    Returns:
        (n, 4) int64 ``x1, y1, x2, y2`` px, row-major from the top left; empty (0, 4) when the
        frame fits in one tile (the whole-frame pass covers it).
    """
    side = config.tile_px
    if width <= side and height <= side:
        return np.zeros((0, 4), np.int64)
    tiles = [(x, y, min(x + side, width), min(y + side, height))
             for y in _starts(height, side, config.overlap)
             for x in _starts(width, side, config.overlap)]
    return np.asarray(tiles, np.int64).reshape(-1, 4)


def _shift(dets: Detections, dx: float, dy: float) -> Detections:
    """Detections of a tile moved into frame px (the tile's origin at ``dx, dy``)."""
    off2 = np.array([dx, dy], np.float32)
    regions = dets.regions.copy()
    regions[:, :2] += off2
    return Detections(dets.boxes + np.tile(off2, 2), dets.scores.copy(),
                      dets.keypoints + off2, regions)


def merge_detections(parts: list[Detections], nms_iou: float) -> Detections:
    """Concatenates detections and keeps the best of every overlapping group (hard NMS).

    Hard rather than weighted suppression: the same person seen in two tiles is the same box
    twice, and averaging a box cut by a tile edge with a whole one would only blur it.

    Args:
        parts: Detections in frame px, each with the same number of keypoints.
        nms_iou: A box overlapping a kept one by IoU above this is dropped.

    Returns:
        The merged detections, best score first.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    if len(parts) == 1:
        return parts[0]
    boxes = np.concatenate([p.boxes for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    kps = np.concatenate([p.keypoints for p in parts])
    regions = np.concatenate([p.regions for p in parts])
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if not keep or not (iou(boxes[i], boxes[keep]) > nms_iou).any():
            keep.append(int(i))
    idx = np.asarray(keep, np.intp)
    return Detections(boxes[idx], scores[idx], kps[idx], regions[idx])


@dataclass
class TiledDetector:
    """Runs ``detector`` on the whole frame and on tiles of it in rotation.

    Stateful only in its rotation cursor (which restarts when the frame size changes); not
    thread-safe, like the detector it wraps.

    Attributes:
        detector: A frame detector ``(H, W, 3) uint8 -> Detections`` in that image's px.
        config: Tiling.
    """

    detector: Callable[[U8], Detections]
    config: TileConfig = field(default_factory=TileConfig)
    _cursor: int = field(default=0, init=False)
    _size: tuple[int, int] = field(default=(0, 0), init=False)
    _tiles: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 4), np.int64),
                                          init=False)

    def reset(self) -> None:
        """Restarts the rotation at the first tile."""
        self._cursor = 0

    def tiles(self, width: int, height: int) -> npt.NDArray[np.int64]:
        """The tile grid for a frame size, (n, 4) int64 px (cached for the last size)."""
        if (width, height) != self._size:
            self._size = (width, height)
            self._tiles = tile_grid(width, height, self.config)
            self._cursor = 0
        return self._tiles

    def revisit_runs(self, width: int, height: int) -> int:
        """Calls until every tile of a frame of this size has been looked at once."""
        n = len(self.tiles(width, height))
        per = self.config.per_run
        return 1 if n == 0 or per == 0 else math.ceil(n / per)

    def __call__(self, image_bgr: U8) -> Detections:
        """Detects people in one frame: the whole frame plus the next tiles in rotation.

        Args:
            image_bgr: (H, W, 3) uint8 BGR frame.

        Returns:
            Detections in frame px, best first.

        Raises:
            ValueError: When the image is not (H, W, 3) uint8.
        """
        validate_image(image_bgr)
        h, w = image_bgr.shape[:2]
        tiles = self.tiles(w, h)
        parts: list[Detections] = []
        if self.config.whole_frame or len(tiles) == 0:
            parts.append(self.detector(image_bgr))
        n = len(tiles)
        if n:
            per = n if self.config.per_run == 0 else min(self.config.per_run, n)
            chosen = [(self._cursor + i) % n for i in range(per)]
            self._cursor = (self._cursor + per) % n
            for x1, y1, x2, y2 in tiles[chosen]:
                crop = np.ascontiguousarray(image_bgr[y1:y2, x1:x2])
                dets = self.detector(crop)
                small = dets.regions[:, 2] <= self.config.max_region * max(x2 - x1, y2 - y1)
                parts.append(_shift(dets[small], float(x1), float(y1)))
        return merge_detections(parts, self.config.nms_iou)
