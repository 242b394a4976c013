"""BlazePose landmarks on rotated person regions, as MediaPipe's pose_landmark_by_roi graph does.

For each region ``(cx, cy, w, h, rotation)``:

1. **Crop** (``ImageToTensorCalculator`` with ``keep_aspect_ratio``): the region, padded to a
   square on its long side, is warped (bilinear, rotation undone) into a 256x256 RGB tensor in
   [0, 1]. The graph sets no ``border_mode``, so MediaPipe *replicates* the border where the
   region leaves the frame; that is the default here too.
2. **Run** the landmark model: 39 landmarks x (x, y, z, visibility logit, presence logit) in crop
   pixels, a pose-presence probability, and 39 world landmarks in metres.
3. **Back-project** (``LandmarkProjectionCalculator``): crop px -> frame px through the same
   affine the crop used; z is scaled like x. Visibility is ``sigmoid(logit)``
   (``TensorsToLandmarksCalculator``, ``visibility_activation: SIGMOID``).
4. **World landmarks** (``WorldLandmarkProjectionCalculator``): rotated about the camera axis by
   the region's rotation, so they are in the image's axes (x right, y down, z away from the
   camera) whatever the crop's tilt: a person lying on the floor has a horizontal spine.
5. **Next region** (``pose_landmarks_to_roi.pbtxt``): from auxiliary landmarks 33 (centre) and 34
   (size and rotation), target angle 90 degrees, scale 1.25 - what the tracker propagates.

Heatmap refinement (``RefineLandmarksFromHeatmapCalculator``, 7x7 window) is applied when the
model's outputs include ``heatmap`` (n, 64, 64, 39) logits. It moves landmarks by 2-3 crop px
(8-13 frame px on a 1080x1920 frame); without it the landmarks differ from MediaPipe's by that
much, with it by ~0.5 px median (measured against mediapipe 0.10.21 on Pose2Sim frames). The
heatmap head costs about half the model's time, so a manifest may leave it out.

Not done: MediaPipe's gating of landmarks on presence < 0.5 (callers filter on ``presence``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.detect import regions_from_keypoints, validate_image
from edge.geometry import sigmoid
from edge.runtime import Model
from edge.types import F32, U8, Poses2D

logger = logging.getLogger(__name__)

__all__ = [
    "NEXT_ROI_SCALE",
    "N_AUX",
    "N_BODY",
    "PoseLandmarker",
    "crop_regions",
    "crop_to_frame_affines",
    "decode_landmarks",
    "refine_from_heatmap",
    "validate_regions",
]

N_BODY = 33
"""Body landmarks (BlazePose topology, see ``edge.skeleton``)."""
N_AUX = 39
"""Landmarks the model emits: 33 body, 2 ROI (33: centre, 34: size/rotation), 4 unused."""
NEXT_ROI_SCALE = 1.25
"""Enlargement of the next-frame region (``pose_landmarks_to_roi.pbtxt``, ``scale_x/y``)."""

Border = Literal["replicate", "zero"]
_BORDERS: dict[str, int] = {"replicate": cv2.BORDER_REPLICATE, "zero": cv2.BORDER_CONSTANT}


def validate_regions(regions: Any) -> None:
    """Raises a ValueError naming the problem unless ``regions`` is (n, 5) float32 and finite.

    Args:
        regions: Candidate ``cx, cy, w, h, rotation`` rows, px and rad.
    """
    if not isinstance(regions, np.ndarray):
        raise ValueError(f"regions must be a numpy array (n, 5) float32, "
                         f"got {type(regions).__name__}")
    if regions.ndim != 2 or regions.shape[1] != 5:
        raise ValueError(f"regions must have shape (n, 5) (cx, cy, w, h px, rotation rad), "
                         f"got {regions.shape}")
    if regions.dtype != np.float32:
        raise ValueError(f"regions must be float32, got {regions.dtype}")
    if not np.isfinite(regions).all():
        raise ValueError("regions must be finite (no NaN or inf)")
    if (regions[:, 2:4] <= 0).any():
        raise ValueError("regions must have positive width and height")


def crop_to_frame_affines(regions: F32, size: int = 256) -> F32:
    """Affines taking crop pixels to frame pixels, one per region.

    The region is first made square on its long side (MediaPipe's ``keep_aspect_ratio``
    padding). Crop pixel ``(size/2, size/2)`` is the region centre and the crop's corners
    ``0`` and ``size`` are the square's corners (MediaPipe's OpenCV converter maps the
    rotated rectangle's corner points onto ``(0, 0)``...``(size, size)``):
    ``frame = centre + R(rotation) @ (crop - size/2) * side / size``, with
    ``R = [[cos, -sin], [sin, cos]]`` in image axes (y down).

    Args:
        regions: (n, 5) float32 ``cx, cy, w, h`` px, rotation rad.
        size: Side of the square crop, px.

    Returns:
        (n, 2, 3) float32 affine matrices, crop px -> frame px.
    """
    r = regions.astype(np.float64)
    side = np.maximum(r[:, 2], r[:, 3])
    s = side / size
    cos, sin = np.cos(r[:, 4]) * s, np.sin(r[:, 4]) * s
    half = size / 2.0
    a = np.empty((r.shape[0], 2, 3), np.float64)
    a[:, 0, 0], a[:, 0, 1] = cos, -sin
    a[:, 1, 0], a[:, 1, 1] = sin, cos
    a[:, 0, 2] = r[:, 0] - half * (cos - sin)
    a[:, 1, 2] = r[:, 1] - half * (sin + cos)
    return a.astype(np.float32)


def crop_regions(image_bgr: U8, regions: F32, size: int = 256,
                 border: Border = "replicate") -> tuple[F32, F32]:
    """Cuts each rotated region out of the frame as a model input.

    Args:
        image_bgr: (H, W, 3) uint8 BGR frame.
        regions: (n, 5) float32 ``cx, cy, w, h`` px, rotation rad.
        size: Side of the square crop, px.
        border: What fills the crop where the region leaves the frame: ``"replicate"`` the
            edge pixels (MediaPipe's landmark graph) or ``"zero"`` (black).

    Returns:
        ``(crops, crop_to_frame)``: crops (n, size, size, 3) float32 RGB in [0, 1];
        crop_to_frame (n, 2, 3) float32 affines, crop px -> frame px.

    Raises:
        ValueError: When the image or the regions are malformed.
    """
    validate_image(image_bgr)
    validate_regions(regions)
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    affines = crop_to_frame_affines(regions, size)
    crops = np.empty((regions.shape[0], size, size, 3), np.float32)
    for i, a in enumerate(affines):
        # WARP_INVERSE_MAP: ``a`` maps destination (crop) to source (frame), as cv2 samples.
        patch = cv2.warpAffine(image_bgr, a.astype(np.float64), (size, size),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=_BORDERS[border], borderValue=(0, 0, 0))
        crops[i] = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)
    crops *= np.float32(1.0 / 255.0)
    return crops, affines


def refine_from_heatmap(landmarks: F32, heatmap: npt.NDArray[np.float32], size: int = 256,
                        kernel: int = 7, min_confidence: float = 0.5) -> F32:
    """MediaPipe's ``RefineLandmarksFromHeatmapCalculator`` on crop-pixel landmarks.

    For each landmark, the heatmap cells in a ``kernel`` x ``kernel`` window around it are
    weighted by ``sigmoid(logit)``; when the window's best confidence reaches
    ``min_confidence``, x and y become the weighted mean cell index scaled to crop px (cell ``c``
    -> ``c * size / hm_size``, MediaPipe's convention: no half-cell offset).

    Args:
        landmarks: (n, L, >=2) float32, crop px in the first two columns.
        heatmap: (n, hm_size, hm_size, L) float32 logits.
        size: Crop side, px.
        kernel: Window side, cells (odd).
        min_confidence: Refine only where the window's best sigmoid confidence is at least this.

    Returns:
        A refined copy of ``landmarks`` (other columns untouched).
    """
    out = np.array(landmarks, np.float32, copy=True)
    n, hm_h, hm_w, n_lm = heatmap.shape
    half = (kernel - 1) // 2
    conf = sigmoid(heatmap)
    for i in range(n):
        for j in range(min(n_lm, out.shape[1])):
            col = int(out[i, j, 0] / size * hm_w)
            row = int(out[i, j, 1] / size * hm_h)
            if not (0 <= col < hm_w and 0 <= row < hm_h):
                continue
            r0, r1 = max(0, row - half), min(hm_h, row + half + 1)
            c0, c1 = max(0, col - half), min(hm_w, col + half + 1)
            w = conf[i, r0:r1, c0:c1, j]
            total = w.sum()
            if w.max() < min_confidence or total <= 0:
                continue
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[i, j, 0] = (cols * w).sum() / total / hm_w * size
            out[i, j, 1] = (rows * w).sum() / total / hm_h * size
    return out


def decode_landmarks(outputs: Mapping[str, npt.NDArray[np.float32]], crop_to_frame: F32,
                     regions: F32, size: int = 256) -> Poses2D:
    """Turns landmark-model outputs for n crops into frame-pixel and metric poses.

    Args:
        outputs: Arrays keyed by the manifest's output keys, batch n on axis 0:
            ``landmarks`` (n, 195) = 39 x (x, y, z crop px, visibility logit, presence logit);
            ``presence`` (n, 1) pose-presence probability; ``world`` (n, 117) = 39 x (x, y, z) m;
            optionally ``heatmap`` (n, 64, 64, 39) logits, used to refine x, y.
        crop_to_frame: (n, 2, 3) float32 affines from :func:`crop_regions`.
        regions: (n, 5) float32 regions the crops were cut from, px and rad.
        size: Side of the square crop the model saw, px.

    Returns:
        Poses2D with keypoints and depth in frame px, visibility and presence probabilities,
        world landmarks in metres (rotated by the region's rotation), the input regions and the
        next-frame regions.

    Raises:
        ValueError: When outputs are missing or their sizes disagree with n.
    """
    n = regions.shape[0]
    for key, width in (("landmarks", N_AUX * 5), ("presence", 1), ("world", N_AUX * 3)):
        if key not in outputs:
            raise ValueError(f"landmark outputs lack {key!r} (have {sorted(outputs)})")
        if outputs[key].size != n * width:
            raise ValueError(f"landmark output {key!r} must hold {n} x {width} values, "
                             f"got shape {outputs[key].shape}")
    if crop_to_frame.shape != (n, 2, 3):
        raise ValueError(f"crop_to_frame must have shape ({n}, 2, 3), got {crop_to_frame.shape}")
    if n == 0:
        return Poses2D.empty()
    lm = np.asarray(outputs["landmarks"], np.float32).reshape(n, N_AUX, 5)
    if "heatmap" in outputs:
        lm = refine_from_heatmap(lm, np.asarray(outputs["heatmap"], np.float32), size)
    presence = np.asarray(outputs["presence"], np.float32).reshape(n)
    world = np.asarray(outputs["world"], np.float32).reshape(n, N_AUX, 3)[:, :N_BODY]

    a = crop_to_frame.astype(np.float64)
    xy = np.einsum("nij,nkj->nki", a[:, :, :2], lm[:, :, :2].astype(np.float64)) + a[:, None, :, 2]
    px_per_crop_px = np.sqrt(np.abs(np.linalg.det(a[:, :, :2])))
    depth = lm[:, :N_BODY, 2] * px_per_crop_px[:, None]

    rot = regions[:, 4].astype(np.float64)
    c, s = np.cos(rot)[:, None], np.sin(rot)[:, None]
    wx, wy = world[..., 0], world[..., 1]
    world_rot = np.stack([c * wx - s * wy, s * wx + c * wy, world[..., 2]], axis=-1)

    next_regions = regions_from_keypoints(xy[:, N_BODY:N_BODY + 2].astype(np.float32),
                                          NEXT_ROI_SCALE, center=0, end=1,
                                          target_angle=math.pi / 2)
    return Poses2D(
        keypoints=xy[:, :N_BODY].astype(np.float32),
        depth=depth.astype(np.float32),
        visibility=sigmoid(lm[:, :N_BODY, 3]),
        presence=presence,
        world=world_rot.astype(np.float32),
        regions=regions.astype(np.float32, copy=True),
        next_regions=next_regions,
    )


class PoseLandmarker:
    """The landmark stage: frame + regions in, :class:`~edge.types.Poses2D` out.

    With ``batch=False`` (the default) each region is one call at batch 1; with ``batch=True``
    all regions go through the model in one call (the interpreter is re-allocated when the
    number of regions changes). Measured on a 2-core x86 VM with ai-edge-litert 2.3.0 and XNNPACK
    (full float model, median of 30 interleaved runs, 1 thread): batched 19.7 / 42.0 / 63.7 /
    81.6 ms vs loop 18.9 / 41.7 / 59.9 / 78.7 ms for 1-4 people - XNNPACK's cost is linear in
    the batch, so batching buys nothing and the loop is the default.

    With ``parallel`` models (interpreters of the same file, one thread each), a call with two
    or more regions deals them among those interpreters, each share cut out and run on its own
    thread: the interpreter's ``invoke`` and OpenCV's warp release the GIL, so on idle cores two
    people can take about one person's time. On a busy machine the fork and join per frame
    costs more than it gains (``edge.pipeline.build_landmarker`` has the figures). A call with
    one region runs on ``model``. Each region's pose does not depend on the
    interpreter that ran it (the same file; XNNPACK's results do not depend on its thread
    count). Not thread-safe: one caller at a time.
    """

    def __init__(self, model: Model, batch: bool = False,
                 parallel: Sequence[Model] = ()) -> None:
        """Binds a loaded landmark model.

        Args:
            model: A ``landmark`` model of the manifest (input ``(1, S, S, 3)``; outputs
                ``landmarks``, ``presence``, ``world``).
            batch: Run all regions in one batched call instead of one call each (no faster on
                XNNPACK CPU; kept for delegates that gain from batching).
            parallel: Two or more further interpreters of ``model``'s manifest entry that run
                the regions of a call with two or more, side by side; empty for none.

        Raises:
            ValueError: When the model's tensors are not a BlazePose landmark model's, or
                ``parallel`` holds another model, a single one, or is combined with ``batch``.
        """
        inputs = model.entry.inputs
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[3] != 3 \
                or inputs[0].shape[1] != inputs[0].shape[2]:
            raise ValueError(f"model {model.entry.key}: landmark input must be (1, S, S, 3), "
                             f"got {[t.shape for t in inputs]}")
        keys = {t.key for t in model.entry.outputs}
        missing = {"landmarks", "presence", "world"} - keys
        if missing:
            raise ValueError(f"model {model.entry.key}: landmark outputs lack {sorted(missing)}")
        parallel = tuple(parallel)
        if parallel and (batch or len(parallel) < 2):
            raise ValueError("parallel landmark models: give two or more, and not with batch")
        other = [m.entry.key for m in parallel
                 if (m.entry.key, m.entry.sha256) != (model.entry.key, model.entry.sha256)]
        if other:
            raise ValueError(f"parallel landmark models must be {model.entry.key}, got {other}")
        self.model = model
        self.batch = batch
        self.size = int(inputs[0].shape[1])
        self.parallel = parallel
        # One worker thread fewer than interpreters: the caller's thread runs the last share.
        self._pool = (ThreadPoolExecutor(len(parallel) - 1, thread_name_prefix="landmark")
                      if parallel else None)

    def close(self) -> None:
        """Ends the worker threads of ``parallel`` (idle between calls; safe to call twice)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _ensure_batch(self, n: int, model: Model | None = None) -> None:
        # Asks the interpreter (not a cached count) so a model shared with other code stays right.
        model = self.model if model is None else model
        allocated = int(model.interpreter.get_input_details()[0]["shape"][0])
        if allocated != n:
            model.resize_batch(n)
            logger.debug("landmark model re-allocated for batch %d", n)

    def run_crops(self, crops: F32) -> dict[str, npt.NDArray[np.float32]]:
        """Runs the model on (n, S, S, 3) crops, batched or one by one; outputs batch n."""
        n = crops.shape[0]
        if self.batch:
            self._ensure_batch(n)
            return self.model.run(crops)
        self._ensure_batch(1)
        parts = [self.model.run(crops[i:i + 1]) for i in range(n)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _share(self, model: Model, image_bgr: U8, regions: F32
               ) -> tuple[dict[str, npt.NDArray[np.float32]], F32]:
        """Crops ``regions`` and runs them one by one on ``model`` (one parallel share)."""
        crops, affines = crop_regions(image_bgr, regions, self.size)
        self._ensure_batch(1, model)
        parts = [model.run(crops[i:i + 1]) for i in range(len(crops))]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, affines

    def _run_parallel(self, image_bgr: U8, regions: F32
                      ) -> tuple[dict[str, npt.NDArray[np.float32]], F32]:
        """Outputs and affines of every region, the regions dealt among ``parallel``."""
        assert self._pool is not None, "PoseLandmarker.close() was called"
        k = min(len(self.parallel), regions.shape[0])
        # Region i goes to interpreter i % k: shares differ by at most one region.
        shares = [np.arange(j, regions.shape[0], k) for j in range(k)]
        futures = [self._pool.submit(self._share, self.parallel[j], image_bgr, regions[idx])
                   for j, idx in enumerate(shares[:-1])]
        results = [*(f.result() for f in futures),
                   self._share(self.parallel[k - 1], image_bgr, regions[shares[-1]])]
        order = np.argsort(np.concatenate(shares), kind="stable")
        outputs = {key: np.concatenate([r[0][key] for r in results])[order]
                   for key in results[0][0]}
        affines = np.concatenate([r[1] for r in results])[order]
        return outputs, affines

    def __call__(self, image_bgr: U8, regions: F32) -> Poses2D:
        """Landmarks of every region of one frame.

        Args:
            image_bgr: (H, W, 3) uint8 BGR frame.
            regions: (n, 5) float32 ``cx, cy, w, h`` px, rotation rad (from the detector or the
                tracker).

        Returns:
            One pose per region, in the regions' order (``Poses2D.empty()`` for n = 0).

        Raises:
            ValueError: When the image or the regions are malformed.
        """
        validate_image(image_bgr)
        validate_regions(regions)
        if regions.shape[0] == 0:
            return Poses2D.empty()
        if self.parallel and regions.shape[0] >= 2:
            outputs, affines = self._run_parallel(image_bgr, regions)
            return decode_landmarks(outputs, affines, regions, self.size)
        crops, affines = crop_regions(image_bgr, regions, self.size)
        return decode_landmarks(self.run_crops(crops), affines, regions, self.size)
