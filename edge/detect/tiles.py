"""A frame detector run on the whole frame and on overlapping tiles in rotation.

A one-pass detector sees the whole frame shrunk to its input (NanoDet: 416 px, BlazePose:
224 px), so a person much smaller than that shrinking allows is below what it can resolve.
Running it on square tiles of the frame as well brings them to the model at full size (a tile
as large as the model input is not shrunk at all). A full sweep costs one call per tile, so a
live detector run makes ``per_run`` calls of a fixed rotation of *views* — the whole frame every
``whole_every``-th view, the tiles in between — and the cost of one run stays bounded whatever
the scene: every part of the frame is looked at within :meth:`TiledDetector.revisit_runs` runs,
the whole frame within ``whole_every / per_run``. Still images take every view at once
(``per_run = 0``).

Detections from overlapping tiles and the whole frame are merged by hard non-maximum
suppression on the detector's boxes (the best-scoring one of an overlapping group is kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import numpy.typing as npt

from edge.detect.blazepose import validate_image
from edge.detect.levels import GrayWatch
from edge.geometry import box_iou
from edge.track import region_boxes
from edge.types import F32, U8, Detections

__all__ = ["CombinedDetector", "TileConfig", "TiledDetector", "merge_detections", "tile_grid",
           "turned_detections", "without_keypoints"]


@dataclass(frozen=True)
class TileConfig:
    """How the frame is tiled.

    Attributes:
        tile_px: Side of a square tile, frame px. Frames no larger than this in both directions
            are not tiled.
        overlap: Fraction of a tile's side shared with its neighbour, in [0, 0.9]; it should
            exceed the size of what the detector boxes (BlazePose: a face) at the smallest
            person wanted, so that someone on a seam is whole in one tile.
        per_run: Detector calls per run (views taken from the rotation); 0 takes the whole
            frame and every tile on every run (still images).
        whole_every: The whole frame is every this-many-th view of the rotation (1: every view
            is the whole frame, no tiles; 2: whole, tile, whole, tile...). People larger than a
            tile are the whole frame's to find.
        nms_iou: Detections overlapping a better one by IoU above this are dropped.
        fine_px: Still images (``per_run`` 0) also take every tile of a second, finer grid of
            this side, enlarged to the model input, so that people too small for the first
            grid reach the model large enough; 0 for none. Crowd stills, 416-px then 300-px
            tiles (one grid each): recall of 40-80 px people 0.59 / 0.73.
        still_row_overlap: Still images only: the rows of the first grid overlap by at least
            this share of the side (columns by ``overlap``). A standing person is about twice
            as tall as wide, so with rows overlapping twice as much as columns a person up to
            about half a tile tall lies whole in one tile; taller ones are the whole frame's.
            At 0.25 both ways a 720-px frame had two rows of 416-px tiles overlapping by 112
            px, and people 150-280 px tall on that seam were cut in every tile, left to the
            whole frame, which sees them at a third of their size (crowd stills 0-99: 6 of the
            11 people >= 80 px the detector lost). 1280x720: 12 tiles instead of 8; 768x576
            unchanged (its two rows already overlap by 256 px).
        still_max_side: Still images only: an image whose longer side is larger than this is
            detected on a copy shrunk to it (``cv2.INTER_AREA``), the detections scaled back to
            its px; 0 for never. The grids' calls grow with the image's area: a 4000x2250
            photo took 311 calls (6.6 s at 1 thread), 1280x720 31; a person then has to be
            about 40 px tall in the shrunk copy to be found (63 px in a 4000 px photo at 2560).
        still_turns: Still images only: the whole frame is also detected turned a quarter
            turn each way (:func:`turned_detections`), for people lying or a camera on its
            side: the box detector, trained on upright people, boxes them badly (zidane.jpg
            turned: the two men in one box) or not at all. The detections' regions are turned
            with the view (+-pi/2), so the landmark model sees them upright. When a turned
            view clearly outscores the upright one (:data:`TURNED_RATIO`), the frame is taken
            to be on its side and also detected and tiled turned that way; otherwise the
            turned views' detections are not used.
    """

    tile_px: int = 416
    overlap: float = 0.25
    per_run: int = 1
    whole_every: int = 3
    nms_iou: float = 0.3
    fine_px: int = 0
    still_row_overlap: float = 0.5
    still_max_side: int = 0
    still_turns: bool = False

    def __post_init__(self) -> None:
        if self.tile_px < 32:
            raise ValueError(f"TileConfig.tile_px must be >= 32, got {self.tile_px}")
        if not 0.0 <= self.overlap <= 0.9:
            raise ValueError(f"TileConfig.overlap must be in [0, 0.9], got {self.overlap}")
        if self.per_run < 0:
            raise ValueError(f"TileConfig.per_run must be >= 0, got {self.per_run}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"TileConfig.nms_iou must be in [0, 1], got {self.nms_iou}")
        if self.whole_every < 1:
            raise ValueError(f"TileConfig.whole_every must be >= 1, got {self.whole_every}")
        if not 0.0 <= self.still_row_overlap <= 0.9:
            raise ValueError(f"TileConfig.still_row_overlap must be in [0, 0.9], got "
                             f"{self.still_row_overlap}")
        if self.still_max_side and self.still_max_side < 32:
            raise ValueError(f"TileConfig.still_max_side must be 0 or >= 32, got "
                             f"{self.still_max_side}")
        if self.fine_px and not 32 <= self.fine_px < self.tile_px:
            raise ValueError(f"TileConfig.fine_px must be 0 or in [32, tile_px), got "
                             f"{self.fine_px}")


def _starts(length: int, side: int, overlap: float) -> list[int]:
    """Evenly spread tile origins along one axis: first at 0, last flush with the end."""
    if length <= side:
        return [0]
    step = side * (1.0 - overlap)
    n = max(2, math.ceil((length - side) / step) + 1)
    return [round(i * (length - side) / (n - 1)) for i in range(n)]


def tile_grid(width: int, height: int, config: TileConfig, row_overlap: float | None = None
              ) -> npt.NDArray[np.int64]:
    """The tiles of a ``width`` x ``height`` frame.

    Args:
        width: Frame width, px.
        height: Frame height, px.
        config: Tile size and overlap.
        row_overlap: The rows' overlap (share of the side), when more than ``config.overlap``.

    Returns:
        (n, 4) int64 ``x1, y1, x2, y2`` px, row-major from the top left; empty (0, 4) when the
        frame fits in one tile (the whole-frame pass covers it).
    """
    side = config.tile_px
    if width <= side and height <= side:
        return np.zeros((0, 4), np.int64)
    tiles = [(x, y, min(x + side, width), min(y + side, height))
             for y in _starts(height, side, max(config.overlap, row_overlap or 0.0))
             for x in _starts(width, side, config.overlap)]
    return np.asarray(tiles, np.int64).reshape(-1, 4)


def _shift(dets: Detections, dx: float, dy: float) -> Detections:
    """Detections of a tile moved into frame px (the tile's origin at ``dx, dy``)."""
    off2 = np.array([dx, dy], np.float32)
    regions = dets.regions.copy()
    regions[:, :2] += off2
    return Detections(dets.boxes + np.tile(off2, 2), dets.scores.copy(),
                      dets.keypoints + off2, regions)


def _scale(dets: Detections, sx: float, sy: float) -> Detections:
    """Detections of a resized copy of the frame in the frame's px (``sx, sy``: frame / copy)."""
    s2 = np.array([sx, sy], np.float32)
    regions = dets.regions.copy()
    regions[:, :4] *= np.tile(s2, 2)
    return Detections(dets.boxes * np.tile(s2, 2), dets.scores.copy(), dets.keypoints * s2,
                      regions)


def turned_detections(detector: Callable[[U8], Detections], image_bgr: U8, k: int
                      ) -> Detections:
    """Detections on the frame turned by ``k`` quarter turns, in the frame's px.

    The frame is turned counter-clockwise ``k`` times (``np.rot90``; -1: clockwise), detected,
    and the boxes, keypoints and regions turned back; each region is also turned by
    ``k * pi / 2``, so that a person upright in the turned view is upright in their region.

    Args:
        detector: A frame detector ``(H, W, 3) uint8 -> Detections`` in that image's px.
        image_bgr: (H, W, 3) uint8 BGR frame.
        k: Quarter turns counter-clockwise, 1 or -1.

    Returns:
        Detections in the frame's px (box edges: a point ``(x', y')`` of the view is
        ``(W - y', x')`` in the frame for ``k = 1``, ``(y', H - x')`` for ``k = -1``).

    Raises:
        ValueError: For ``k`` other than 1 or -1.
    """
    if k not in (1, -1):
        raise ValueError(f"turned_detections: k must be 1 or -1, got {k}")
    h, w = image_bgr.shape[:2]
    # cv2.rotate: the same pixels as np.rot90, 7.5 against 50 ms for a 1768x994 frame (numpy's
    # strided copy of the turned view is slow)
    code = cv2.ROTATE_90_COUNTERCLOCKWISE if k == 1 else cv2.ROTATE_90_CLOCKWISE
    dets = detector(np.asarray(cv2.rotate(image_bgr, code), np.uint8))

    def back(xy: F32) -> F32:
        x, y = xy[..., 0], xy[..., 1]
        out = np.stack([w - y, x] if k == 1 else [y, h - x], axis=-1)
        return np.asarray(out, np.float32)

    b = dets.boxes
    corners = back(np.stack([b[:, :2], b[:, 2:]], axis=1))  # (n, 2, 2)
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    regions = dets.regions.copy()
    regions[:, :2] = back(dets.regions[:, :2])
    regions[:, 2:4] = dets.regions[:, [3, 2]]
    turn = regions[:, 4] + np.float32(k * math.pi / 2)
    regions[:, 4] = np.arctan2(np.sin(turn), np.cos(turn))
    return Detections(boxes.astype(np.float32).reshape(-1, 4), dets.scores.copy(),
                      back(dets.keypoints), regions)


#: A still frame is on its side (``TileConfig.still_turns``) when the whole frame turned a
#: quarter turn one way gives detections whose scores sum to more than :data:`TURNED_RATIO`
#: times the upright frame's and more than :data:`TURNED_MIN`, while the upright frame's sum
#: is under :data:`UPRIGHT_MAX` (it found few people). Crowd stills 0-99 (frames on their side
#: taken for so, upright frames taken for upright): 90 / 94 at "more than the upright
#: frame's", and the 6 upright frames taken for turned cost 14 people and gave 19 false
#: persons; 79 / 100 at these values (frames 100-299 upright: 200 / 200; without
#: :data:`UPRIGHT_MAX` 199, a photo of plants with 5 people standing, -1 person, +2 false);
#: group photos 40 / 40 both ways.
TURNED_RATIO = 2.0
TURNED_MIN = 0.6
UPRIGHT_MAX = 1.5

#: A still frame on its side (``TileConfig.still_turns``): an upright detection overlapping a
#: turned one by more than this share of the smaller box is dropped.
TURNED_OVER = 0.5


#: A tile's detection within this many px of a tile edge that is not the frame's edge is cut
#: by the tile.
EDGE_PX = 3.0


def whole_in_tile(boxes: F32, tile: tuple[int, int, int, int], frame: tuple[int, int]
                  ) -> npt.NDArray[np.bool_]:
    """Which of a tile's detections are whole inside it.

    A person larger than a tile, or on its edge, is seen cut by the tile, and the detector
    then reports the part it sees (an upper body, a pair of legs) as a person; the whole frame
    or the overlapping neighbour tile sees that person whole. So a detection touching a tile
    edge that is not also the frame's edge is dropped (the overlap between tiles is what keeps
    someone smaller than it whole in one of them).

    Args:
        boxes: (n, 4) float32 ``x1, y1, x2, y2`` px in the tile's coordinates.
        tile: ``x1, y1, x2, y2`` of the tile in the frame, px.
        frame: ``(width, height)`` of the frame, px.

    Returns:
        (n,) bool, True for detections to keep.
    """
    tx1, ty1, tx2, ty2 = tile
    w, h = tx2 - tx1, ty2 - ty1
    keep = np.ones(len(boxes), bool)
    if tx1 > 0:
        keep &= boxes[:, 0] > EDGE_PX
    if ty1 > 0:
        keep &= boxes[:, 1] > EDGE_PX
    if tx2 < frame[0]:
        keep &= boxes[:, 2] < w - EDGE_PX
    if ty2 < frame[1]:
        keep &= boxes[:, 3] < h - EDGE_PX
    return keep


#: A tile's detection at least this share of the tile's side tall, lying mostly (:data:`INSIDE`)
#: in a person the whole frame found in the same run, is a part of that person.
PART_OF_TILE = 0.6
INSIDE = 0.6
#: ... and at most this share of that person's height: a part (upper body, legs) is shorter
#: than its person. A person as tall as the whole-frame box they lie in is someone the whole
#: frame boxed together with a neighbour (crowd stills: a 247-px person beside another, in one
#: whole-frame box, was dropped as its part); the same person seen twice is NMS's to merge.
PART_HEIGHT = 0.8


def part_of_whole(boxes: F32, whole: F32, tile_side: int) -> npt.NDArray[np.bool_]:
    """Which of a tile's detections are a part of someone the whole-frame pass found.

    A tile sees a large person's head, legs or upper body whole inside it and boxes it as a
    person; the whole frame, which sees that person whole, has them. Tiles are for people too
    small for the whole frame, so a detection as tall as most of the tile and lying mostly
    inside a whole-frame detection's box, and shorter than it (:data:`PART_HEIGHT`), is
    dropped. A small person standing in front of or
    behind a large one is shorter than that and kept (zidane.jpg: five such parts of the two
    men; crowd stills: people behind a near one).

    Args:
        boxes: (n, 4) float32 tile detections' boxes, frame px.
        whole: (m, 4) float32 the whole-frame detections' boxes, frame px.
        tile_side: The tile's side (its height), px.

    Returns:
        (n,) bool, True for parts to drop.
    """
    if len(boxes) == 0 or len(whole) == 0:
        return np.zeros(len(boxes), bool)
    heights = boxes[:, 3] - boxes[:, 1]
    tall = heights >= PART_OF_TILE * tile_side
    inside = box_iou(boxes, whole, over="first") >= INSIDE
    shorter = heights[:, None] <= PART_HEIGHT * (whole[:, 3] - whole[:, 1])[None, :]
    return np.asarray(tall & (inside & shorter).any(axis=1), bool)


def without_keypoints(dets: Detections) -> Detections:
    """The detections with their keypoints dropped (n, 0, 2): for mixing detector kinds."""
    return Detections(dets.boxes, dets.scores, np.zeros((len(dets), 0, 2), np.float32),
                      dets.regions)


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
    if len({p.keypoints.shape[1] for p in parts}) > 1:  # detectors of different kinds
        parts = [without_keypoints(p) for p in parts]
    boxes = np.concatenate([p.boxes for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    kps = np.concatenate([p.keypoints for p in parts])
    regions = np.concatenate([p.regions for p in parts])
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if not keep or not (box_iou(boxes[i][None], boxes[keep]) > nms_iou).any():
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
    #: Runs the whole-frame views instead of ``detector`` when set (a combined detector).
    whole: Callable[[U8], Detections] | None = None
    #: Streams (``per_run`` >= 1) only: ``stream[0]`` takes the whole-frame views in place of
    #: ``whole``, and each further detector is a whole-frame view of its own, in every other
    #: tile slot. So a run is one call of one model (NanoDet 17.4 ms, BlazePose's detector
    #: 8.4 ms at 1 thread) rather than both at once (25.8 ms). Still images run ``whole``.
    stream: tuple[Callable[[U8], Detections], ...] = ()
    #: Streams only: tells gray frames (a night / IR camera) apart, decided over time; while
    #: the stream is gray the further whole-frame detectors' views (BlazePose's detector) are
    #: ``stream[0]``'s. BlazePose's detector, trained on colour, loses most people on gray
    #: frames (demo clip made gray, every frame, ``detector.kind = "blazepose"``: 315 -> 217
    #: person-frames) where NanoDet loses few (373 -> 355). None: never.
    gray_watch: GrayWatch | None = None
    _cursor: int = field(default=0, init=False)
    _size: tuple[int, int] = field(default=(0, 0), init=False)
    _tiles: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 4), np.int64),
                                          init=False)

    def reset(self) -> None:
        """Restarts the rotation at the first tile; forgets whether the stream is gray."""
        self._cursor = 0
        if self.gray_watch is not None:
            self.gray_watch.reset()

    def tiles(self, width: int, height: int) -> npt.NDArray[np.int64]:
        """The tile grid for a frame size, (n, 4) int64 px (cached for the last size)."""
        if (width, height) != self._size:
            self._size = (width, height)
            self._tiles = tile_grid(width, height, self.config)
            self._cursor = 0
        return self._tiles

    def views(self, width: int, height: int) -> list[int]:
        """The rotation for a frame size.

        Returns:
            Views in order: -1 for the whole frame, a tile's index, or ``-2 - k`` for the
            whole frame by ``stream[1 + k]``.
        """
        n = len(self.tiles(width, height))
        extras = len(self.stream) - 1 if self.stream and self.config.per_run > 0 else 0
        every = self.config.whole_every
        if n == 0 or every == 1:
            return [-1, *(-2 - k for k in range(extras))]
        slots: list[int] = []
        for t in range(n):
            slots.append(t)
            if extras:  # every other slot: the next extra whole-frame detector
                slots.append(-2 - (t % extras))
        out: list[int] = []
        for v in slots:
            if len(out) % every == 0:
                out.append(-1)
            out.append(v)
        return out

    def revisit_runs(self, width: int, height: int) -> int:
        """Runs until every view of a frame of this size has been taken once."""
        per = self.config.per_run
        n = len(self.views(width, height))
        return 1 if per == 0 else math.ceil(n / per)

    def __call__(self, image_bgr: U8) -> Detections:
        """Detects people in one frame: the next views of the rotation (all for ``per_run`` 0).

        Args:
            image_bgr: (H, W, 3) uint8 BGR frame.

        Returns:
            Detections in frame px, best first.

        Raises:
            ValueError: When the image is not (H, W, 3) uint8.
        """
        validate_image(image_bgr)
        h, w = image_bgr.shape[:2]
        big = self.config.still_max_side
        if self.config.per_run == 0 and big and max(h, w) > big:
            f = big / max(h, w)
            sw, sh = max(1, round(w * f)), max(1, round(h * f))
            small: U8 = np.asarray(cv2.resize(image_bgr, (sw, sh),
                                              interpolation=cv2.INTER_AREA), np.uint8)
            return _scale(self(small), w / sw, h / sh)
        if self.config.per_run == 0:
            if not self.config.still_turns:
                return self._views(image_bgr, None)
            # Which way up: the whole frame as it is and turned a quarter turn each way; the
            # frame is on its side when a turned view's detections clearly outscore the
            # upright view's, which found few (:data:`TURNED_RATIO`, :data:`TURNED_MIN`,
            # :data:`UPRIGHT_MAX`). It is then detected whole and tiled turned; the upright
            # views' detections fill in where the turned ones have nobody (a frame misjudged
            # keeps its upright people), not over them (an upright box over two people lying
            # side by side gave a "pose" that swallowed both).
            detector = self.whole or self.detector
            whole = detector(image_bgr)
            raw: dict[int, Detections] = {}  # each turned view's own, in that view's px

            def kept(k: int) -> Callable[[U8], Detections]:
                def detect(view: U8) -> Detections:
                    raw[k] = detector(view)
                    return raw[k]
                return detect

            turned = {k: turned_detections(kept(k), image_bgr, k) for k in (1, -1)}
            k = max(turned, key=lambda q: float(turned[q].scores.sum()))
            upright = self._views(image_bgr, whole)
            score = float(turned[k].scores.sum())
            found = float(whole.scores.sum())
            if score <= TURNED_RATIO * found or score <= TURNED_MIN or found >= UPRIGHT_MAX:
                return upright
            side = turned_detections(lambda im: self._views(im, raw[k]), image_bgr, k)
            if len(side) and len(upright):
                over = box_iou(upright.boxes, side.boxes, over="smaller").max(axis=1)
                upright = upright[over <= TURNED_OVER]
            return merge_detections([side, upright], self.config.nms_iou)
        if self.gray_watch is not None:
            self.gray_watch.update(image_bgr)
        return self._views(image_bgr, None)

    def _views(self, image_bgr: U8, whole: Detections | None) -> Detections:
        """The next views of the rotation (still images: all of them), merged.

        Args:
            image_bgr: (H, W, 3) uint8 BGR frame.
            whole: The whole frame's detections when already made (still images), else None.

        Returns:
            Detections in frame px, best first.
        """
        h, w = image_bgr.shape[:2]
        tiles = self.tiles(w, h)
        views = self.views(w, h)
        if self.config.per_run == 0:
            tiles = tile_grid(w, h, self.config, self.config.still_row_overlap)
            if self.config.fine_px:
                fine = tile_grid(w, h, replace(self.config, tile_px=self.config.fine_px, fine_px=0))
                tiles = np.concatenate([tiles, fine]).reshape(-1, 4)
            chosen = [-1, *range(len(tiles))]
        else:
            k = min(self.config.per_run, len(views))
            chosen = [views[(self._cursor + i) % len(views)] for i in range(k)]
            self._cursor = (self._cursor + k) % len(views)
        parts: list[Detections] = []
        whole_boxes = np.zeros((0, 4), np.float32)
        for v in sorted(chosen, key=lambda v: v >= 0):  # whole-frame views first
            if v < 0:
                if self.stream and self.config.per_run > 0:
                    gray = self.gray_watch is not None and self.gray_watch.gray
                    found = self.stream[0 if gray else -1 - v](image_bgr)
                elif whole is not None:
                    found = whole
                else:
                    found = (self.whole or self.detector)(image_bgr)
                whole_boxes = np.concatenate([whole_boxes, found.boxes])
                parts.append(found)
                continue
            x1, y1, x2, y2 = (int(c) for c in tiles[v])
            crop = np.ascontiguousarray(image_bgr[y1:y2, x1:x2])
            dets = self.detector(crop)
            dets = _shift(dets[whole_in_tile(dets.boxes, (x1, y1, x2, y2), (w, h))],
                          float(x1), float(y1))
            parts.append(dets[~part_of_whole(dets.boxes, whole_boxes, y2 - y1)])
        return merge_detections(parts, self.config.nms_iou)


@dataclass
class CombinedDetector:
    """BlazePose's detector first, a box detector for whoever it misses.

    BlazePose's detections carry a body region aligned with the person (centre at the hips,
    turned with the body), which the landmark model needs for people lying, bending or
    upside down; it misses people facing away and small people. The box detector finds those
    but its region is an upright square on the box. So every BlazePose detection is kept, and a
    box detection only where it is not the same person as a BlazePose one: their regions' boxes
    overlap by IoU < ``same_iou``. (An earlier rule dropped every box detection mostly inside a
    BlazePose region; in a crowd that dropped the far people standing behind a near one. A
    hand or head taken for a person is left to the landmarks' box-fit check of the tracker.)

    Attributes:
        primary: BlazePose's detector (aligned regions).
        secondary: The box detector.
        same_iou: IoU of the two regions' axis-aligned boxes from which a box detection is the
            BlazePose detection's person.
    """

    primary: Callable[[U8], Detections]
    secondary: Callable[[U8], Detections]
    same_iou: float = 0.5

    def __call__(self, image_bgr: U8) -> Detections:
        """Detections of both, primary's first (frame px; keypoints dropped)."""
        a = self.primary(image_bgr)
        b = self.secondary(image_bgr)
        if len(a) and len(b):
            same = box_iou(region_boxes(b.regions), region_boxes(a.regions))
            b = b[same.max(axis=1) < self.same_iou]
        parts = [without_keypoints(d) for d in (a, b) if len(d)]
        if not parts:
            return without_keypoints(Detections.empty())
        return Detections(np.concatenate([p.boxes for p in parts]),
                          np.concatenate([p.scores for p in parts]),
                          np.zeros((sum(len(p) for p in parts), 0, 2), np.float32),
                          np.concatenate([p.regions for p in parts]))
