"""Pasting cutouts onto a background, and the ground truth of what was pasted.

Pure image arithmetic (numpy and OpenCV), no file I/O. Conventions:

- keypoints use ``cv2``'s pixel-centre convention (pixel (i, j) is the point x = j, y = i);
- a person is *there* where its alpha >= 128 (of 255);
- people are pasted in list order, back to front: a later person covers an earlier one.

Ground truth per pasted person (see README.md, "gt.json"):

- ``height``: rows of the frame the whole pasted person spans (before occlusion and before the
  frame edge cuts it), px;
- ``bbox``: ``[x, y, w, h]`` px of the part that is seen (in the frame, not covered);
- ``keypoints``: COCO-17 ``[x, y, v]``: v = 0 outside the frame; 1 inside but not seen (covered
  by a person pasted on top, or not visible in the source by the landmark model's own visibility
  < 0.5, e.g. the far arm); 2 seen;
- ``visible_fraction``: seen pixels over all the person's pixels; ``area``: seen pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from bench.crowd.cutouts import Cutout
from edge.skeleton import Coco17
from edge.types import F32, U8

#: COCO-17 index of each joint's mirror image (left <-> right), for horizontal flips.
COCO17_FLIP: npt.NDArray[np.intp] = np.array(
    [Coco17[j.name.replace("LEFT", "@").replace("RIGHT", "LEFT").replace("@", "RIGHT")]
     for j in Coco17], np.intp)
#: People seen less than this (fraction of their pixels) are marked ``ignore``: scorers neither
#: reward finding them nor punish missing them.
MIN_VISIBLE_FRACTION = 0.5


@dataclass(frozen=True)
class Placement:
    """Where and how one cutout is pasted.

    Attributes:
        cutout: The person.
        scale: Frame px per cutout px.
        x: Column of the scaled cutout's left edge in the frame (may be < 0 or run off).
        y: Row of its top edge.
        flip: Mirror left-right (the keypoints' left and right are swapped too).
        gain: Brightness gain on the person's pixels (1 = unchanged).
        bias: Brightness offset, grey levels.
        identity: The person's id in the ground truth.
        turn: Quarter turn of the scaled (and flipped) cutout, degrees: 0, 90 (clockwise: the
            head to the right) or -90 (the head to the left): a person lying on the floor.
            ``x`` and ``y`` place the turned cutout.
    """

    cutout: Cutout
    scale: float
    x: int
    y: int
    flip: bool = False
    gain: float = 1.0
    bias: float = 0.0
    identity: int = 0
    turn: int = 0

    def __post_init__(self) -> None:
        if self.turn not in (0, 90, -90):
            raise ValueError(f"Placement.turn must be 0, 90 or -90 degrees, got {self.turn}")


@dataclass(frozen=True, eq=False)
class Pasted:
    """Ground truth of one pasted person (units px).

    Attributes:
        identity: Id from the placement.
        bbox: (4,) float64 ``x, y, w, h`` of the seen extent (zeros when nothing is seen).
        height: Rows the whole person spans; for a person turned to lie (``placement.turn``),
            the columns: the body's length, what an upright person's height is.
        keypoints: (17, 3) float64 ``x, y, v``.
        visible_fraction: Seen pixels / all pixels of the person.
        area: Seen pixels.
        placement: How it was pasted.
    """

    identity: int
    bbox: npt.NDArray[np.float64]
    height: int
    keypoints: npt.NDArray[np.float64]
    visible_fraction: float
    area: int
    placement: Placement

    @property
    def ignore(self) -> bool:
        """Whether too little of the person is seen to be scored."""
        return self.visible_fraction < MIN_VISIBLE_FRACTION


def scaled(placement: Placement) -> tuple[U8, F32, npt.NDArray[np.bool_]]:
    """The cutout as pasted: resized, flipped, turned, brightness changed.

    Returns:
        ``(bgra, keypoints, visible)``: (h, w, 4) uint8; (17, 2) float32 px in the scaled
        (turned) cutout; (17,) bool source visibility (reordered when flipped).
    """
    c = placement.cutout
    h0, w0 = c.bgra.shape[:2]
    w = max(1, round(w0 * placement.scale))
    h = max(1, round(h0 * placement.scale))
    interp = cv2.INTER_AREA if placement.scale < 1.0 else cv2.INTER_LINEAR
    bgra = cv2.resize(c.bgra, (w, h), interpolation=interp)
    # cv2.resize maps pixel centres: x_dst = (x_src + 0.5) * s - 0.5, exactly per axis.
    s = np.array([w / w0, h / h0], np.float32)
    kp = (c.keypoints + 0.5) * s - 0.5
    vis = c.visible.copy()
    if placement.flip:
        bgra = bgra[:, ::-1]
        kp = kp[COCO17_FLIP]
        kp[:, 0] = (w - 1) - kp[:, 0]
        vis = vis[COCO17_FLIP]
    if placement.turn:
        # Exact quarter turns of the pixel grid; pixel centres map to pixel centres.
        hh, ww = bgra.shape[:2]
        if placement.turn == 90:  # clockwise: (x, y) -> (hh - 1 - y, x)
            bgra = np.rot90(bgra, -1)
            kp = np.stack([(hh - 1) - kp[:, 1], kp[:, 0]], axis=1)
        else:  # counter-clockwise: (x, y) -> (y, ww - 1 - x)
            bgra = np.rot90(bgra, 1)
            kp = np.stack([kp[:, 1], (ww - 1) - kp[:, 0]], axis=1)
    bgr = bgra[:, :, :3].astype(np.float32) * placement.gain + placement.bias
    out = np.dstack([np.clip(np.round(bgr), 0, 255).astype(np.uint8), bgra[:, :, 3]])
    return np.ascontiguousarray(out), kp.astype(np.float32), vis


def _window(x: int, y: int, w: int, h: int, width: int, height: int
            ) -> tuple[slice, slice, slice, slice] | None:
    """Frame and cutout slices of the overlap of a w x h patch at (x, y) with the frame."""
    fx1, fy1, fx2, fy2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if fx1 >= fx2 or fy1 >= fy2:
        return None
    return (slice(fy1, fy2), slice(fx1, fx2), slice(fy1 - y, fy2 - y), slice(fx1 - x, fx2 - x))


def compose(background: U8, placements: list[Placement]) -> tuple[U8, list[Pasted]]:
    """Pastes people onto a background.

    Args:
        background: (H, W, 3) uint8 BGR, not changed.
        placements: Back to front.

    Returns:
        ``(frame, people)``: the (H, W, 3) uint8 BGR frame and one :class:`Pasted` per placement
        (same order), people entirely outside the frame included (with nothing seen).
    """
    height, width = background.shape[:2]
    frame = background.astype(np.float32)
    patches = [scaled(p) for p in placements]
    for p, (bgra, _, _) in zip(placements, patches, strict=True):
        win = _window(p.x, p.y, bgra.shape[1], bgra.shape[0], width, height)
        if win is None:
            continue
        fy, fx, cy, cx = win
        a = bgra[cy, cx, 3:4].astype(np.float32) / 255.0
        frame[fy, fx] = frame[fy, fx] * (1.0 - a) + bgra[cy, cx, :3].astype(np.float32) * a
    # Front to back: what a person shows is its mask minus everything pasted after it.
    cover = np.zeros((height, width), bool)
    people: list[Pasted | None] = [None] * len(placements)
    for i in range(len(placements) - 1, -1, -1):
        p = placements[i]
        bgra, kp, vis = patches[i]
        mask = bgra[:, :, 3] >= 128
        # The body's length: rows for an upright person, columns for one lying.
        rows = np.flatnonzero(mask.any(axis=0 if p.turn else 1))
        total = int(mask.sum())
        person_h = int(rows[-1] - rows[0] + 1) if len(rows) else 0
        seen = np.zeros((height, width), bool)
        win = _window(p.x, p.y, bgra.shape[1], bgra.shape[0], width, height)
        if win is not None:
            fy, fx, cy, cx = win
            seen[fy, fx] = mask[cy, cx] & ~cover[fy, fx]
        k = kp.astype(np.float64) + np.array([p.x, p.y], np.float64)
        inside = (k[:, 0] >= 0) & (k[:, 0] <= width - 1) & (k[:, 1] >= 0) \
            & (k[:, 1] <= height - 1)
        ix = np.clip(np.round(k[:, 0]).astype(int), 0, width - 1)
        iy = np.clip(np.round(k[:, 1]).astype(int), 0, height - 1)
        v = np.where(~inside, 0, np.where(vis & ~cover[iy, ix], 2, 1))
        ys, xs = np.nonzero(seen)
        bbox = (np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1],
                         np.float64) if len(xs) else np.zeros(4))
        people[i] = Pasted(p.identity, bbox, person_h, np.column_stack([k, v]),
                           float(len(xs) / total) if total else 0.0, len(xs), p)
        if win is not None:
            fy, fx, cy, cx = win
            cover[fy, fx] |= mask[cy, cx]
    return (np.clip(np.round(frame), 0, 255).astype(np.uint8),
            [q for q in people if q is not None])


def pasted_extent(placement: Placement) -> tuple[int, int]:
    """``(width, height)`` px of the scaled (turned) cutout: the box the placement occupies."""
    h0, w0 = placement.cutout.bgra.shape[:2]
    w, h = max(1, round(w0 * placement.scale)), max(1, round(h0 * placement.scale))
    return (h, w) if placement.turn else (w, h)


def fit_background(photo: U8, width: int, height: int, rng: np.random.Generator) -> U8:
    """A random crop of ``photo`` with the frame's aspect, resized to ``width`` x ``height``.

    Args:
        photo: (h, w, 3) uint8 BGR.
        width: Frame width, px.
        height: Frame height, px.
        rng: Source of the crop's size (60-100 % of the largest), position and a mirror flip.

    Returns:
        (height, width, 3) uint8 BGR.
    """
    ph, pw = photo.shape[:2]
    aspect = width / height
    cw_max = min(pw, ph * aspect)
    cw = cw_max * rng.uniform(0.6, 1.0)
    ch = cw / aspect
    x0 = rng.uniform(0, pw - cw)
    y0 = rng.uniform(0, ph - ch)
    crop = photo[int(y0):int(y0 + ch), int(x0):int(x0 + cw)]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if crop.shape[1] > width else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, (width, height), interpolation=interp))
