"""What the models see of a frame from a dim or noisy camera: brightened, or smoothed.

The detector and the landmark model were trained on daylight photos, and the shipped int8
models quantise their input. A frame from a dim room (auto exposure at its limit) uses a
quarter of the grey levels, so the models see a flat, coarsely quantised picture of it; a small
sensor with its gain turned up adds noise that the box detector takes for texture and stops
seeing people in. :func:`model_view` gives the models the frame brightened (a linear gain
from its 99th percentile of luminance) or smoothed (a Gaussian blur when the frame's noise,
estimated from its second differences, is high), and the frame itself when it needs neither
(every daylight clip and photo the project has: unchanged figures). Published keypoints are in
the frame's px either way (the view has the frame's geometry), and the annotated outputs draw
on the frame as delivered.

:class:`GrayWatch` tells a stream from a gray (night / IR) camera (:func:`chroma_spread`), on
which BlazePose's detector finds few people (``edge.detect.tiles.TiledDetector``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.types import U8

__all__ = ["GrayWatch", "LevelsConfig", "blockiness", "chroma_spread", "model_view",
           "noise_sigma"]


@dataclass(frozen=True)
class LevelsConfig:
    """When and how a frame is brightened or smoothed for the models.

    Attributes:
        dark_p99: A frame whose luminance's 99th percentile is below this (grey levels) is
            dark; 0 never brightens.
        target_p99: A dark frame is scaled so that its 99th percentile reaches this.
        max_gain: ... by at most this factor.
        noise_sigma: A frame whose noise (:func:`noise_sigma`, grey levels) is above this is
            smoothed; 0 never smooths. Daylight photos and the crowd stills: 0.5-1.4 (bus.jpg,
            fine texture, 1.0); the same with Gaussian noise of sd 25 per channel: 14.6-16.6.
        blur_sigma: The Gaussian blur's sd, px, for a noisy or blocky frame.
        block_ratio: A frame whose :func:`blockiness` is above this is smoothed as a noisy
            one; 0 never. The crowd stills (JPEG q95) 1.00-1.30, the demo clip 0.97-1.10,
            bus.jpg 1.24, zidane.jpg 1.74; the crowd stills at JPEG q20 1.35-5.4 (median 2.1).
    """

    dark_p99: float = 0.0
    target_p99: float = 220.0
    max_gain: float = 5.0
    noise_sigma: float = 0.0
    blur_sigma: float = 1.0
    block_ratio: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dark_p99", "noise_sigma"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 255.0):
                raise ValueError(f"LevelsConfig.{name} must be in [0, 255], got {v}")
        if not (math.isfinite(self.target_p99) and 1.0 <= self.target_p99 <= 255.0):
            raise ValueError(f"LevelsConfig.target_p99 must be in [1, 255], got "
                             f"{self.target_p99}")
        if not (math.isfinite(self.max_gain) and self.max_gain >= 1.0):
            raise ValueError(f"LevelsConfig.max_gain must be >= 1, got {self.max_gain}")
        if not (math.isfinite(self.blur_sigma) and self.blur_sigma > 0.0):
            raise ValueError(f"LevelsConfig.blur_sigma must be > 0, got {self.blur_sigma}")
        if not (math.isfinite(self.block_ratio) and self.block_ratio >= 0.0):
            raise ValueError(f"LevelsConfig.block_ratio must be >= 0, got {self.block_ratio}")

    @property
    def active(self) -> bool:
        """Whether any frame can be changed."""
        return self.dark_p99 > 0.0 or self.noise_sigma > 0.0 or self.block_ratio > 0.0


#: :func:`noise_sigma` measures strips of this many rows every :data:`STRIP_EVERY` rows.
STRIP_ROWS = 64
STRIP_EVERY = 256


def _gray(image: U8) -> U8:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)


def noise_sigma(gray: U8) -> float:
    """The sd of a frame's noise, grey levels (Immerkaer 1996, robust variant).

    The frame's second differences (the 3x3 mask ``[1 -2 1; -2 4 -2; 1 -2 1]``) cancel smooth
    shading and edges' first order; on pure Gaussian noise of sd ``s`` their sd is ``6 s``. The
    median absolute value (x 1.4826, the normal sd) is taken rather than the mean, so that
    texture and edges, a minority of pixels, weigh little. Measured on strips of
    :data:`STRIP_ROWS` rows every :data:`STRIP_EVERY` rows (a quarter of a 720p frame).

    Args:
        gray: (H, W) uint8 luminance.

    Returns:
        The estimated sd, grey levels (0 for a frame under 3x3 px).
    """
    h, w = gray.shape[:2]
    if h < 3 or w < 3:
        return 0.0
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    values = []
    for y in range(0, h, STRIP_EVERY):
        strip = gray[y:y + STRIP_ROWS + 2].astype(np.float32)
        if strip.shape[0] < 3:
            continue
        values.append(np.abs(cv2.filter2D(strip, -1, mask)[1:-1, 1:-1]).ravel())
    if not values:
        return 0.0
    return float(np.median(np.concatenate(values)) * 1.4826 / 6.0)


#: :func:`blockiness` measures every this-many-th row (column) for the steps across columns
#: (rows): the block grid is in every row alike.
BLOCK_LINE_STEP = 4


def blockiness(gray: U8) -> float:
    """How much a frame shows JPEG's 8x8 blocks: 1 for none, more for a blocky image.

    A heavily compressed JPEG is a grid of 8x8 px blocks, each smoothed within and stepping at
    its edges. The mean absolute step between neighbouring pixels is taken for each of the 8
    positions within the grid (columns ``8k + j`` to ``8k + j + 1``, and rows alike); the
    ratio is the step across block edges (``j = 7``) over the median of the 7 steps within.
    A frame scaled or cropped after its compression has its grid elsewhere, or smoothed away,
    and measures about 1. Every :data:`BLOCK_LINE_STEP`-th row (column) is measured: 0.5 ms for
    a 768x576 frame.

    Args:
        gray: (H, W) uint8 luminance.

    Returns:
        The ratio, the mean over columns and rows (1.0 for a frame under 16 px either way).
    """
    h, w = gray.shape[:2]
    if h < 16 or w < 16:
        return 1.0
    ratios = []
    for lines in (gray[::BLOCK_LINE_STEP], gray[:, ::BLOCK_LINE_STEP].T):
        steps = np.abs(np.diff(lines.astype(np.float32), axis=1))  # (lines, n - 1)
        n = steps.shape[1] // 8 * 8
        phase = steps[:, :n].reshape(len(steps), -1, 8).mean(axis=(0, 1))  # (8,)
        ratios.append(float(phase[7]) / max(float(np.median(phase[:7])), 1e-6))
    return float(np.mean(ratios))


def model_view(image: U8, config: LevelsConfig) -> U8:
    """The frame as the models should see it: brightened when dark, smoothed when noisy or blocky.

    Args:
        image: (H, W, 3) uint8 BGR frame (not modified).
        config: When and how much.

    Returns:
        ``image`` itself when it needs nothing, else a new (H, W, 3) uint8 BGR array.
    """
    if not config.active:
        return image
    gray = _gray(image)
    out = image
    if ((config.noise_sigma > 0.0 and noise_sigma(gray) > config.noise_sigma)
            or (config.block_ratio > 0.0 and blockiness(gray) > config.block_ratio)):
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), config.blur_sigma), np.uint8)
    if config.dark_p99 > 0.0:
        p99 = float(np.percentile(gray[::4, ::4], 99))
        if p99 < config.dark_p99:
            gain = min(config.max_gain, config.target_p99 / max(p99, 1.0))
            lut = np.clip(np.round(np.arange(256) * gain), 0, 255).astype(np.uint8)
            out = np.asarray(cv2.LUT(out, lut), np.uint8)
    return out


#: :func:`chroma_spread` looks at every this-many-th row and column (1280x720: 80x45 px).
GRAY_STEP = 16


def chroma_spread(image: U8, step: int = GRAY_STEP) -> float:
    """How much colour a frame has: the spread of its pixels' colour differences, grey levels.

    A gray frame (a night / IR camera, often delivered as three equal channels) has ``B - G``
    and ``R - G`` the same at every pixel: 0, or a constant tint after a codec's colour
    conversion (the demo clip made gray and written as mp4v: ``B - G`` 5 everywhere). So the
    spread (99th minus 1st percentile) of each difference is measured, not its size, on a
    subsample of every ``step``-th row and column, and the larger of the two returned. Gray
    frames, also through JPEG at quality 50 or mp4v: 0; colour frames (the demo clip, the
    Pose2Sim clips, the opencv-doc photos, bus.jpg, zidane.jpg): 37-213.

    Args:
        image: (H, W, 3) uint8 BGR frame.
        step: Subsampling, px.

    Returns:
        The spread, grey levels (>= 0).
    """
    sub = image[::step, ::step].astype(np.int16)
    spread = 0.0
    for c in (0, 2):
        lo, hi = np.percentile(sub[..., c] - sub[..., 1], (1.0, 99.0))
        spread = max(spread, float(hi - lo))
    return spread


@dataclass
class GrayWatch:
    """Whether a stream's frames are gray, decided over time.

    The first frame decides; after that the verdict changes only when :attr:`switch_after`
    frames in a row say otherwise (a camera switching to night mode, or back), so that a
    frame of a colour scene that happens to be nearly colourless (a white wall filling the
    view) does not flip it. Not thread-safe: one owner (the detector's thread).

    Attributes:
        max_spread: A frame whose :func:`chroma_spread` is at most this is gray.
        switch_after: Frames in a row against the verdict that change it.
    """

    max_spread: float = 8.0
    switch_after: int = 3
    _gray: bool | None = field(default=None, init=False)
    _against: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_spread) and 0.0 <= self.max_spread <= 255.0):
            raise ValueError(f"GrayWatch.max_spread must be in [0, 255], got {self.max_spread}")
        if self.switch_after < 1:
            raise ValueError(f"GrayWatch.switch_after must be >= 1, got {self.switch_after}")

    @property
    def gray(self) -> bool:
        """The verdict so far (False before any frame)."""
        return bool(self._gray)

    def reset(self) -> None:
        """Forgets the verdict: the next frame decides."""
        self._gray, self._against = None, 0

    def update(self, image: U8) -> bool:
        """Takes one frame into account.

        Args:
            image: (H, W, 3) uint8 BGR frame.

        Returns:
            The verdict after this frame.
        """
        now = chroma_spread(image) <= self.max_spread
        if self._gray is None or now == self._gray:
            self._gray, self._against = now, 0
        else:
            self._against += 1
            if self._against >= self.switch_after:
                self._gray, self._against = now, 0
        return self._gray
