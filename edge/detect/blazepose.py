"""Person detection with BlazePose's SSD detector, decoded as MediaPipe's pose_detection graph does.

The pipeline (``mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt`` followed by
``mediapipe/modules/pose_landmark/pose_detection_to_roi.pbtxt``):

1. **Letterbox** the frame into a 224x224 RGB tensor in [-1, 1], keeping the aspect ratio and
   padding with black (``ImageToTensorCalculator``, ``keep_aspect_ratio``, ``BORDER_ZERO``).
2. **Run** the model: per SSD anchor a box and 4 keypoints (offsets in input pixels from the
   anchor centre) and a score logit.
3. **Decode** (``TensorsToDetectionsCalculator``): clip logits to +-100, sigmoid, keep scores
   >= ``min_score``, add anchor centres, drop boxes of negative or NaN size.
4. **Weighted NMS** (``NonMaxSuppressionCalculator``, ``WEIGHTED``, IoU > 0.3): every cluster of
   overlapping boxes becomes one detection whose box and keypoints are the score-weighted mean of
   the cluster and whose score is the cluster's best.
5. **Undo the letterbox** (``DetectionLetterboxRemovalCalculator``) to get frame pixels.
6. **Body region** (``AlignmentPointsRectsCalculator`` + ``RectTransformationCalculator``): a
   square centred on keypoint 0 (mid-hip), side twice the distance to keypoint 1, rotated so
   that the hip->keypoint-1 direction points up, scaled by 1.25.

Why by hand: no maintained Python library decodes MediaPipe's anchor scheme or its weighted NMS
(OpenCV's ``dnn.NMSBoxes`` is plain hard NMS), and both are a few lines of numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.geometry import box_iou, sigmoid
from edge.runtime import Model
from edge.types import F32, U8, Detections

__all__ = [
    "DetectorConfig",
    "Letterbox",
    "PoseDetector",
    "decode",
    "letterbox",
    "preprocess",
    "regions_from_keypoints",
    "ssd_anchors",
    "validate_image",
    "weighted_nms",
]


@dataclass(frozen=True)
class DetectorConfig:
    """Parameters of MediaPipe's pose_detection graph; the defaults are MediaPipe's.

    Only fixed-size anchors are supported (``fixed_anchor_size: true`` in the graph), so the
    ``min_scale``/``max_scale`` anchor options, which only size non-fixed anchors, are absent.

    Attributes:
        input_size: Side of the square model input, px (``input_size_width/height``).
        strides: Feature-map strides of the anchor layers, px (``strides``). Consecutive equal
            strides share one grid, as in ``SsdAnchorsCalculator``.
        anchor_offset: Anchor centre within its grid cell, in cells (``anchor_offset_x/y``).
        anchors_per_cell_per_layer: Anchors each layer puts in each cell: one per aspect ratio
            (``aspect_ratios: 1.0``) plus one for ``interpolated_scale_aspect_ratio`` (1.0 by the
            proto default), so 2.
        num_keypoints: Keypoints per detection (``num_keypoints``).
        score_clipping: Logits are clipped to +-this before the sigmoid
            (``score_clipping_thresh``).
        min_score: Detections scoring below are dropped (``min_score_thresh``). MediaPipe's
            graph file says 0.2 but every API that runs it (legacy Solutions
            ``min_detection_confidence``, Tasks ``min_pose_detection_confidence``) sets 0.5.
        nms_iou: Boxes overlapping the cluster leader by IoU strictly above this merge into it
            (``min_suppression_threshold``).
        max_detections: At most this many detections, best first; -1 for no limit (MediaPipe's
            ``max_num_detections`` default; its WEIGHTED algorithm ignores the option anyway).
        roi_scale: Region side = ``roi_scale`` x 2 x |keypoint 1 - keypoint 0| (``scale_x/y``).
        center_keypoint: Keypoint at the region centre (``rotation_vector_start_keypoint_index``).
        scale_keypoint: Keypoint fixing size and rotation (``rotation_vector_end_keypoint_index``).
        target_angle_deg: Direction, degrees counter-clockwise from +x, that the
            centre->scale-keypoint vector is turned to (``rotation_vector_target_angle_degrees``).
    """

    input_size: int = 224
    strides: tuple[int, ...] = (8, 16, 32, 32, 32)
    anchor_offset: float = 0.5
    anchors_per_cell_per_layer: int = 2
    num_keypoints: int = 4
    score_clipping: float = 100.0
    min_score: float = 0.5
    nms_iou: float = 0.3
    max_detections: int = -1
    roi_scale: float = 1.25
    center_keypoint: int = 0
    scale_keypoint: int = 1
    target_angle_deg: float = 90.0

    def __post_init__(self) -> None:
        if self.input_size < 1:
            raise ValueError(f"DetectorConfig.input_size must be >= 1, got {self.input_size}")
        if not self.strides or any(s < 1 for s in self.strides):
            raise ValueError(f"DetectorConfig.strides must be positive, got {self.strides}")
        if self.anchors_per_cell_per_layer < 1:
            raise ValueError("DetectorConfig.anchors_per_cell_per_layer must be >= 1")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"DetectorConfig.min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"DetectorConfig.nms_iou must be in [0, 1], got {self.nms_iou}")
        if self.max_detections == 0 or self.max_detections < -1:
            raise ValueError("DetectorConfig.max_detections must be >= 1, or -1 for no limit, "
                             f"got {self.max_detections}")
        if self.roi_scale <= 0.0:
            raise ValueError(f"DetectorConfig.roi_scale must be > 0, got {self.roi_scale}")
        if self.score_clipping <= 0.0:
            raise ValueError("DetectorConfig.score_clipping must be > 0")
        for name in ("center_keypoint", "scale_keypoint"):
            k = getattr(self, name)
            if not 0 <= k < self.num_keypoints:
                raise ValueError(f"DetectorConfig.{name} must be in [0, {self.num_keypoints}), "
                                 f"got {k}")

    @property
    def num_anchors(self) -> int:
        """Number of anchors the configuration yields (2254 for BlazePose)."""
        return int(ssd_anchors(self).shape[0])


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square model input: ``input = frame * scale + pad``.

    The frame is scaled by ``scale`` (its long side becomes ``input_size``) and centred, leaving
    ``pad_x`` px of padding left and right, ``pad_y`` px above and below. Coordinates are in
    OpenCV's convention (pixel centres at integers), as MediaPipe's OpenCV converter uses them.

    Attributes:
        scale: Model-input pixels per frame pixel, ``input_size / max(H, W)``.
        pad_x: Padding left of the image (and right of it), model-input px.
        pad_y: Padding above the image (and below it), model-input px.
        input_size: Side of the square model input, px.
    """

    scale: float
    pad_x: float
    pad_y: float
    input_size: int

    @classmethod
    def fit(cls, width: int, height: int, input_size: int) -> Letterbox:
        """The letterbox that fits a ``width`` x ``height`` frame into ``input_size`` squared."""
        scale = input_size / max(width, height)
        return cls(scale=scale, pad_x=(input_size - width * scale) / 2.0,
                   pad_y=(input_size - height * scale) / 2.0, input_size=input_size)

    def to_input(self, points: npt.ArrayLike) -> F32:
        """Maps points (..., 2) from frame px to model-input px."""
        p = np.asarray(points, dtype=np.float32)
        return (p * np.float32(self.scale)
                + np.array([self.pad_x, self.pad_y], np.float32)).astype(np.float32)

    def to_frame(self, points: npt.ArrayLike) -> F32:
        """Maps points (..., 2) from model-input px back to frame px."""
        p = np.asarray(points, dtype=np.float32)
        return ((p - np.array([self.pad_x, self.pad_y], np.float32))
                / np.float32(self.scale)).astype(np.float32)


def validate_image(image: Any, name: str = "image_bgr") -> None:
    """Raises a ValueError naming the problem unless ``image`` is an (H, W, 3) uint8 array.

    Args:
        image: The candidate frame.
        name: How to call it in the message.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (H, W, 3) uint8 BGR, "
                         f"got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3) (BGR), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0-255 BGR), got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: {image.shape}")


def ssd_anchors(config: DetectorConfig | None = None) -> F32:
    """Centres of the detector's SSD anchors, as MediaPipe's ``SsdAnchorsCalculator`` makes them.

    Layers with equal consecutive strides share one grid of ``ceil(input_size / stride)`` cells
    per side; each cell gets ``anchors_per_cell_per_layer`` anchors per layer of the group, all
    at the cell's centre ``(x + offset) / cells``. Order: layer group, then row, then column, then
    anchor. With fixed anchor size every anchor has width = height = 1 (normalised), so only
    centres matter.

    Args:
        config: Detector parameters; MediaPipe's when None.

    Returns:
        (n_anchors, 2) float32, anchor centre ``x, y`` normalised to [0, 1] of the model input
        (2254 anchors for BlazePose: 28x28x2 + 14x14x2 + 7x7x6).
    """
    cfg = config if config is not None else DetectorConfig()
    centres: list[F32] = []
    i = 0
    while i < len(cfg.strides):
        j = i
        while j < len(cfg.strides) and cfg.strides[j] == cfg.strides[i]:
            j += 1
        cells = math.ceil(cfg.input_size / cfg.strides[i])
        c = (np.arange(cells, dtype=np.float32) + np.float32(cfg.anchor_offset)) / np.float32(cells)
        gx, gy = np.meshgrid(c, c)  # row-major: y outer, x inner
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        centres.append(np.repeat(grid, (j - i) * cfg.anchors_per_cell_per_layer, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


def letterbox(image_bgr: U8, size: int) -> tuple[U8, Letterbox]:
    """Fits a frame into a square model input, keeping its aspect ratio, black padding.

    Args:
        image_bgr: (H, W, 3) uint8 BGR frame, any size.
        size: Side of the square model input, px.

    Returns:
        ``(image, letterbox)``: (size, size, 3) uint8 BGR, and the mapping of input px back to
        frame px. Bilinear (``warpAffine`` has no area filter); the models' calibration and
        fidelity checks use the same.

    Raises:
        ValueError: When the image is not (H, W, 3) uint8.
    """
    validate_image(image_bgr)
    h, w = image_bgr.shape[:2]
    lb = Letterbox.fit(w, h, size)
    m = np.array([[lb.scale, 0.0, lb.pad_x], [0.0, lb.scale, lb.pad_y]], np.float64)
    warped = cv2.warpAffine(image_bgr, m, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return np.asarray(warped, np.uint8), lb


def preprocess(image_bgr: U8, size: int = 224) -> tuple[F32, Letterbox]:
    """Letterboxes a frame into the detector's input tensor.

    As MediaPipe's ``ImageToTensorCalculator`` with ``keep_aspect_ratio`` and ``BORDER_ZERO``:
    an axis-aligned warp (bilinear) of the whole frame into the centre of the square, black
    padding (-1 after scaling), RGB, values mapped from [0, 255] to [-1, 1].

    Args:
        image_bgr: (H, W, 3) uint8 BGR frame.
        size: Side of the square model input, px.

    Returns:
        ``(tensor, letterbox)``: tensor (1, size, size, 3) float32 RGB in [-1, 1]; the letterbox
        mapping input px back to frame px.

    Raises:
        ValueError: When the image is not (H, W, 3) uint8.
    """
    warped, lb = letterbox(image_bgr, size)
    rgb = cv2.cvtColor(warped, cv2.COLOR_BGR2RGB)
    tensor = rgb.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return tensor[np.newaxis], lb


def weighted_nms(boxes: F32, scores: F32, keypoints: F32, iou_threshold: float,
                 max_detections: int = -1) -> tuple[F32, F32, F32]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Repeatedly takes the best remaining detection, gathers every remaining detection whose IoU
    with it is strictly above ``iou_threshold`` (itself included), and emits the score-weighted
    mean box and keypoints of that cluster with the leader's score; the cluster is removed.
    Unlike MediaPipe, the leader always belongs to its own cluster (MediaPipe stops the whole loop
    when a degenerate zero-area leader has IoU 0 with itself) and ``max_detections`` is honoured
    (MediaPipe's weighted branch ignores it).

    Args:
        boxes: (n, 4) float32 ``x1, y1, x2, y2``, any consistent unit.
        scores: (n,) float32 scores in [0, 1].
        keypoints: (n, k, 2) float32 keypoints in the same unit as the boxes.
        iou_threshold: Overlap above which a box joins the cluster.
        max_detections: Stop after this many outputs; -1 for no limit.

    Returns:
        ``(boxes, scores, keypoints)`` of the kept detections, best first, same layouts.
    """
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out_b: list[F32] = []
    out_s: list[float] = []
    out_k: list[F32] = []
    while remaining.size and (max_detections < 0 or len(out_s) < max_detections):
        lead = remaining[0]
        overlap = box_iou(boxes[lead][None], boxes[remaining])[0] > iou_threshold
        overlap[0] = True
        members = remaining[overlap]
        w = scores[members].astype(np.float64)
        w_sum = w.sum()
        if w_sum > 0:
            out_b.append((boxes[members] * w[:, None]).sum(0) / w_sum)
            out_k.append((keypoints[members] * w[:, None, None]).sum(0) / w_sum)
        else:  # all-zero scores (min_score 0): keep the leader as is
            out_b.append(boxes[lead])
            out_k.append(keypoints[lead])
        out_s.append(float(scores[lead]))
        remaining = remaining[~overlap]
    k = keypoints.shape[1]
    if not out_s:
        return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                np.zeros((0, k, 2), np.float32))
    return (np.asarray(out_b, np.float32), np.asarray(out_s, np.float32),
            np.asarray(out_k, np.float32).reshape(len(out_s), k, 2))


def regions_from_keypoints(keypoints: F32, scale: float, *, center: int = 0, end: int = 1,
                           target_angle: float = math.pi / 2) -> F32:
    """Square rotated regions from a centre keypoint and a size/rotation keypoint.

    MediaPipe's ``AlignmentPointsRectsCalculator`` then ``RectTransformationCalculator``
    (``square_long``): centre at ``keypoints[:, center]``, side ``2 * scale * |end - center|``,
    rotation ``target_angle - atan2(-(y_end - y_c), x_end - x_c)`` normalised to [-pi, pi), so a
    region of rotation 0 has its "up" (-y) along centre->end. Computed in pixels, so the square
    stays square in any frame aspect.

    Args:
        keypoints: (n, k, 2) float32, px.
        scale: Enlargement of the side (1.25 for BlazePose).
        center: Index of the centre keypoint.
        end: Index of the keypoint fixing size and rotation.
        target_angle: Radians, counter-clockwise from +x with y up, that centre->end maps to.

    Returns:
        (n, 5) float32 ``cx, cy, w, h`` px (w == h) and rotation rad.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[2] != 2 or kp.shape[1] <= max(center, end):
        raise ValueError(f"keypoints must have shape (n, k > {max(center, end)}, 2), "
                         f"got {kp.shape}")
    c = kp[:, center]
    d = kp[:, end] - c
    side = 2.0 * np.hypot(d[:, 0], d[:, 1]) * scale
    angle = target_angle - np.arctan2(-d[:, 1], d[:, 0])
    rot = angle - 2.0 * math.pi * np.floor((angle + math.pi) / (2.0 * math.pi))
    return np.stack([c[:, 0], c[:, 1], side, side, rot], axis=1).astype(np.float32)


def decode(boxes_raw: npt.NDArray[np.float32], scores_raw: npt.NDArray[np.float32],
           anchors: F32, letterbox: Letterbox, config: DetectorConfig | None = None
           ) -> Detections:
    """Turns raw detector outputs into frame-pixel detections with body regions.

    Args:
        boxes_raw: (1, n_anchors, 4 + 2k) or (n_anchors, 4 + 2k) float32: box ``cx, cy, w, h``
            then k keypoints ``x, y``, offsets in model-input px from the anchor centre (sizes
            in px).
        scores_raw: (1, n_anchors, 1), (n_anchors, 1) or (n_anchors,) float32 score logits.
        anchors: (n_anchors, 2) float32 from :func:`ssd_anchors`, normalised.
        letterbox: How the frame was fitted into the input (from :func:`preprocess`).
        config: Detector parameters; MediaPipe's when None.

    Returns:
        Detections in frame px, best score first: face boxes, scores, keypoints (mid-hip, body
        size/rotation point, mid-shoulder, upper-body size/rotation point) and body regions.

    Raises:
        ValueError: When the arrays' shapes disagree with the anchors or the config.
    """
    cfg = config if config is not None else DetectorConfig()
    k = cfg.num_keypoints
    n = anchors.shape[0]
    raw = np.asarray(boxes_raw, dtype=np.float32).reshape(-1, boxes_raw.shape[-1])
    logits = np.asarray(scores_raw, dtype=np.float32).reshape(-1)
    if raw.shape != (n, 4 + 2 * k) or logits.shape != (n,):
        raise ValueError(f"detector outputs must be boxes ({n}, {4 + 2 * k}) and scores ({n},) "
                         f"per anchor, got {tuple(boxes_raw.shape)} and "
                         f"{tuple(scores_raw.shape)}")
    clipped = np.clip(logits.astype(np.float64), -cfg.score_clipping, cfg.score_clipping)
    scores = sigmoid(clipped)
    keep = np.flatnonzero(scores >= cfg.min_score)
    if keep.size == 0:
        return Detections.empty(k)
    size = np.float32(cfg.input_size)
    r = raw[keep] / size  # normalised offsets
    a = anchors[keep]
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    kps = (r[:, 4:4 + 2 * k].reshape(-1, k, 2) + a[:, None, :]).astype(np.float32)
    valid = (w >= 0) & (h >= 0)  # also drops NaN (b/171391719 in MediaPipe)
    nms_boxes, s, nms_kps = weighted_nms(boxes[valid], scores[keep][valid], kps[valid],
                                         cfg.nms_iou, cfg.max_detections)
    boxes_px = letterbox.to_frame(nms_boxes.reshape(-1, 2, 2) * size).reshape(-1, 4)
    kps_px = letterbox.to_frame(nms_kps * size)
    regions = regions_from_keypoints(kps_px, cfg.roi_scale, center=cfg.center_keypoint,
                                     end=cfg.scale_keypoint,
                                     target_angle=math.radians(cfg.target_angle_deg))
    return Detections(boxes=boxes_px.astype(np.float32), scores=s,
                      keypoints=kps_px.astype(np.float32), regions=regions)


class PoseDetector:
    """BlazePose person detector: frame in, :class:`~edge.types.Detections` out.

    Stateless apart from the model and the anchors (computed once). Not thread-safe: one
    interpreter serves one call at a time.
    """

    def __init__(self, model: Model, config: DetectorConfig | None = None) -> None:
        """Binds a loaded detector model.

        Args:
            model: A ``detector`` model from the manifest (outputs ``boxes`` and ``scores``).
            config: Decoding parameters; MediaPipe's when None.

        Raises:
            ValueError: When the model's tensors do not match the configuration.
        """
        self.model = model
        self.config = config if config is not None else DetectorConfig()
        self.anchors = ssd_anchors(self.config)
        inputs = model.entry.inputs
        outputs = {t.key: t.shape for t in model.entry.outputs}
        size = self.config.input_size
        if len(inputs) != 1 or tuple(inputs[0].shape) != (1, size, size, 3):
            raise ValueError(f"model {model.entry.key}: detector input must be "
                             f"(1, {size}, {size}, 3), got {[t.shape for t in inputs]}")
        want = {"boxes": (1, self.anchors.shape[0], 4 + 2 * self.config.num_keypoints),
                "scores": (1, self.anchors.shape[0], 1)}
        for key, shape in want.items():
            if tuple(outputs.get(key, ())) != shape:
                raise ValueError(f"model {model.entry.key}: detector output {key!r} must be "
                                 f"{shape} for this configuration, manifest has "
                                 f"{outputs.get(key)}")

    def __call__(self, image_bgr: U8) -> Detections:
        """Detects people in one frame.

        Args:
            image_bgr: (H, W, 3) uint8 BGR frame.

        Returns:
            Detections in frame px, best first (possibly empty).

        Raises:
            ValueError: When the image is not (H, W, 3) uint8.
        """
        tensor, lb = preprocess(image_bgr, self.config.input_size)
        out = self.model.run(tensor)
        return decode(out["boxes"], out["scores"], self.anchors, lb, self.config)
